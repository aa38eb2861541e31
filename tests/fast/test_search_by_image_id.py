"""POST /searches with an 'image_id': a catalogue image's stored canonical JPEG is the query
(the gateway through Flask's test client, on a real Redis; no worker runs here, so the
tasks only wait in their queues)."""

import io
import json

import pytest

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared import keys
from tests.conftest import fresh_database
from tests.helpers.images import png

KEY = "image-id-test-key"


@pytest.fixture(scope="module")
def gateway(redis_url):
    app = create_app(GatewaySettings(redis_url=fresh_database(redis_url), api_key=KEY))
    yield app
    app.extensions["redis"].flushdb()


@pytest.fixture(scope="module")
def stored_id(gateway) -> str:
    response = gateway.test_client().post(
        "/api/v1/images",
        data={"file": (io.BytesIO(png(seed=5)), "lemon.png"), "id": "lemon-1"},
        headers={"X-API-Key": KEY},
    )
    assert response.status_code == 202, response.get_json()
    return "lemon-1"


def search(app, **fields):
    return app.test_client().post("/api/v1/searches", data={"k": "3", **fields})


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def test_a_catalogue_image_is_the_query_and_the_job_remembers_it(gateway, stored_id):
    response = search(gateway, image_id=stored_id)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    client = gateway.extensions["redis"]
    # The query is the stored canonical JPEG itself, not decoded and encoded again.
    stored = gateway.test_client().get(f"/api/v1/images/{stored_id}/content").data
    assert client.get(keys.query_image(job_id)) == stored
    assert json.loads(client.get(keys.job(job_id)))["params"] == {"k": 3, "image_id": stored_id}


def test_an_unknown_id_is_a_404_a_person_understands(gateway, stored_id):
    response = search(gateway, image_id="no-such-image")
    assert error_of(response) == (404, "image_not_found")
    assert response.get_json()["error"]["message"] == (
        "no image with id 'no-such-image' in the catalogue"
    )


def test_an_id_with_a_file_or_a_url_is_refused(gateway, stored_id):
    with_file = search(gateway, image_id=stored_id, file=(io.BytesIO(png()), "q.png"))
    assert error_of(with_file) == (400, "image_id_and_file")
    with_url = search(gateway, image_id=stored_id, url="https://example.com/q.png")
    assert error_of(with_url) == (400, "image_id_and_file")
    assert "not several" in with_url.get_json()["error"]["message"]


def test_a_malformed_id_is_a_400_and_an_empty_one_is_no_id(gateway, stored_id):
    assert error_of(search(gateway, image_id="../etc/passwd")) == (400, "invalid_image_id")
    assert error_of(search(gateway, image_id="  ")) == (400, "missing_file")
