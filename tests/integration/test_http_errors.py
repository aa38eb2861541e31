"""Bad requests get a clear JSON 4xx through HTTP, and nothing stored is touched."""

import io

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.integration


def png_bytes(color=(10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, "PNG")
    return buffer.getvalue()


def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and len(error["message"]) > 10
    return error


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-API-Key": "wrong"}, 401)],
    ids=["missing-key", "wrong-key"],
)
def test_writes_need_the_api_key(service, headers, status):
    files = {"file": ("a.png", png_bytes())}
    error_of(
        requests.post(f"{service.api}/images", files=files, headers=headers, timeout=10), status
    )
    error_of(requests.delete(f"{service.api}/images/anything", headers=headers, timeout=10), status)
    error_of(
        requests.post(f"{service.api}/models/autoencoder/trainings", headers=headers, timeout=10),
        status,
    )


def test_reads_are_open_by_default(service):
    assert requests.get(f"{service.api}/stats", timeout=5).status_code == 200
    assert requests.get(f"{service.api}/health", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"image": ("a.png", png_bytes())}, {}, 400, "missing_file"),
        ({"file": ("a.txt", b"hello, not an image")}, {}, 415, "not_an_image"),
        ({"file": ("a.png", b"")}, {}, 400, "empty_file"),
        ({"file": ("a.png", png_bytes())}, {"k": "0"}, 400, "invalid_k"),
        ({"file": ("a.png", png_bytes())}, {"k": "101"}, 400, "invalid_k"),
        ({"file": ("a.png", png_bytes())}, {"k": "ten"}, 400, "invalid_k"),
        ({"file": ("a.png", png_bytes())}, {"methods": "sift"}, 400, "unknown_method"),
    ],
    ids=[
        "wrong-field",
        "not-an-image",
        "empty",
        "k-zero",
        "k-too-big",
        "k-not-a-number",
        "unknown-method",
    ],
)
def test_bad_searches(service, files, data, status, code):
    response = requests.post(f"{service.api}/searches", files=files, data=data, timeout=10)
    assert error_of(response, status)["code"] == code


def test_bad_uploads_fail_alone_and_are_reported(service):
    stats_before = requests.get(f"{service.api}/stats", timeout=5).json()
    files = [
        ("file", ("good.png", png_bytes((1, 2, 3)))),
        ("file", ("bad.txt", b"not an image")),
    ]
    response = requests.post(f"{service.api}/images", files=files, headers=service.auth, timeout=10)
    assert response.status_code == 202, response.text
    body = response.json()
    assert [i["filename"] for i in body["images"]] == ["good.png"]
    assert [(r["filename"], r["code"]) for r in body["rejected"]] == [("bad.txt", "not_an_image")]
    assert service.wait(body["job_id"])["status"] == "done"
    stats_after = requests.get(f"{service.api}/stats", timeout=5).json()
    assert stats_after["catalogue_size"] == stats_before["catalogue_size"] + 1


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "a b", "x\u0007y"])
def test_ids_with_separators_or_control_characters_are_refused(service, bad_id):
    response = requests.post(
        f"{service.api}/images",
        files={"file": ("a.png", png_bytes())},
        data={"id": bad_id},
        headers=service.auth,
        timeout=10,
    )
    assert error_of(response, 400)["code"] == "invalid_id"


def test_unknown_ids_are_404(service):
    assert (
        error_of(requests.get(f"{service.api}/jobs/nope", timeout=5), 404)["code"]
        == "job_not_found"
    )
    assert (
        error_of(requests.get(f"{service.api}/images/nope", timeout=5), 404)["code"]
        == "image_not_found"
    )
    error_of(requests.get(f"{service.api}/images/nope/thumbnail", timeout=5), 404)
    error_of(requests.get(f"{service.api}/no/such/route", timeout=5), 404)


@pytest.mark.parametrize("metadata", ["[1, 2", "[1, 2]", "[" * 100_000, "[" * 16_000])
def test_metadata_must_be_a_small_json_object(service, metadata):
    response = requests.post(
        f"{service.api}/images",
        files={"file": ("a.png", png_bytes())},
        data={"metadata": metadata},
        headers=service.auth,
        timeout=10,
    )
    assert error_of(response, 400)["code"] == "invalid_metadata"
