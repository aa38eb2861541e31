"""The OpenAPI document against the live gateway.

- every Flask route under /api/v1 is in the document, and the document describes no other;
- real responses of a whole flow (index, search, list, stats, models) match it;
- schemathesis sends generated requests to every operation: no 5xx, and no status, content
  type, header or body that the document does not declare.
"""

import json
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.app import create_app
from services.gateway.openapi import build_spec
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Generated cases per operation and phase; with the deterministic generation below, the whole
# run stays well under two minutes on two cores.
MAX_EXAMPLES = 25
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # no example database: every run replays the same deterministic cases
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def spec(service) -> dict:
    response = requests.get(f"{service.api}/openapi.json", timeout=10)
    assert response.status_code == 200
    return response.json()


# The document is built by the same function the gateway serves it with (the test below checks
# that the served one is identical), from the same environment the test service inherits.
# Loaded at import, not from a fixture: schemathesis' fixture-based loader does not work with
# pytest 9 (it sets a private node attribute pytest no longer has).
SPEC = build_spec(GatewaySettings(environment="test"))
schema = schemathesis.openapi.from_dict(
    SPEC,
    config=schemathesis.Config.from_dict(
        {"request-timeout": 30, "generation": {"deterministic": True}}
    ),
)


def documented_operations(spec: dict) -> set[tuple[str, str]]:
    prefix = spec["servers"][0]["url"]
    return {
        (method.upper(), prefix + path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def rule_paths(rule: str) -> list[str]:
    """A Flask rule as OpenAPI paths: <conv:name> -> {name}; any(a, b) -> one path each."""
    choice = re.search(r"<any\(([^)]*)\):\w+>", rule)
    if choice:
        options = [o.strip().strip("'\"") for o in choice.group(1).split(",")]
        return [p for o in options for p in rule_paths(rule.replace(choice.group(0), o, 1))]
    return [re.sub(r"<(?:[^:<>]+:)?(\w+)>", r"{\1}", rule)]


def test_every_route_is_documented_and_nothing_else(service, spec):
    app = create_app(GatewaySettings(redis_url=service.env["REDIS_URL"]))
    routes = {
        (method, path)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
        for path in rule_paths(rule.rule)
    }
    documented = documented_operations(spec)
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations with no route"


def test_the_served_document_is_the_one_tested(spec):
    assert spec == json.loads(json.dumps(SPEC))


def test_document_essentials(spec):
    security = spec["components"]["securitySchemes"]["ApiKey"]
    assert (security["type"], security["in"], security["name"]) == ("apiKey", "header", "X-API-Key")
    writes = {
        ("post", "/images"),
        ("delete", "/images/{image_id}"),
        ("post", "/models/autoencoder/trainings"),
        ("post", "/models/autoencoder/versions/{version}/activate"),
    }
    for method, path in writes:
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"ApiKey": []}], (method, path)
        assert "401" in operation["responses"]
    accepted = spec["paths"]["/searches"]["post"]["responses"]["202"]
    assert accepted["headers"]["Location"]["required"] is True
    error = spec["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["required"]) == {"code", "message"}


def test_real_responses_match_the_document(service, sample_images):
    """A whole flow through the API; every response is validated against the document."""

    def check(response, path, method="GET"):
        schema[path][method].validate_response(response)
        return response

    def get(url, path, **params):
        return check(requests.get(f"{service.api}{url}", params=params, timeout=30), path)

    chosen = {f"oa-{product}": paths[0] for product, paths in list(sample_images.items())[:4]}
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in chosen.values()]
    files.append(("file", ("notes.jpg", b"not a photo", "image/jpeg")))
    added = check(
        requests.post(
            f"{service.api}/images",
            files=files,
            data=[("id", i) for i in [*chosen, "oa-notes"]],
            headers=service.auth,
            timeout=60,
        ),
        "/images",
        "POST",
    )
    assert added.status_code == 202 and added.json()["rejected"][0]["code"] == "not_an_image"
    job_id = added.json()["job_id"]
    assert service.wait(job_id)["status"] == "done"
    assert get(f"/jobs/{job_id}", "/jobs/{job_id}").json()["kind"] == "index"

    query_id, query_path = next(iter(chosen.items()))
    searched = check(
        requests.post(
            f"{service.api}/searches",
            files={"file": (query_path.name, query_path.read_bytes(), "image/jpeg")},
            data={"k": "3"},
            timeout=30,
        ),
        "/searches",
        "POST",
    )
    assert searched.status_code == 202
    service.wait(searched.json()["job_id"])
    job = get(f"/jobs/{searched.json()['job_id']}", "/jobs/{job_id}").json()
    assert job["methods"]["vgg16"]["results"][0]["id"] == query_id
    assert job["methods"]["autoencoder"]["reason"] == "not_trained"
    assert job["fused"]["results"][0]["id"] == query_id

    assert get("/images", "/images", offset=1, limit=2).json()["total"] == len(chosen)
    assert get(f"/images/{query_id}", "/images/{image_id}").status_code == 200
    for kind in ("content", "thumbnail"):
        response = get(f"/images/{query_id}/{kind}", f"/images/{{image_id}}/{kind}")
        assert response.headers["Content-Type"] == "image/jpeg"
    lookup = check(
        requests.post(
            f"{service.api}/images/lookup", json={"ids": [query_id, "oa-none"]}, timeout=10
        ),
        "/images/lookup",
        "POST",
    )
    assert lookup.json() == {"existing": [query_id]}
    assert get("/stats", "/stats").json()["catalogue_size"] == len(chosen)
    assert get("/health", "/health").json()["status"] == "ok"
    assert get("/models/autoencoder", "/models/autoencoder").json()["versions"] == []
    missing = check(
        requests.post(
            f"{service.api}/models/autoencoder/versions/ae-none/activate",
            headers=service.auth,
            timeout=10,
        ),
        "/models/autoencoder/versions/{version}/activate",
        "POST",
    )
    assert missing.status_code == 404
    unauthorized = check(
        requests.delete(f"{service.api}/images/{query_id}", timeout=10),
        "/images/{image_id}",
        "DELETE",
    )
    assert unauthorized.status_code == 401
    deleted = check(
        requests.delete(f"{service.api}/images/{query_id}", headers=service.auth, timeout=10),
        "/images/{image_id}",
        "DELETE",
    )
    assert deleted.json() == {"id": query_id, "deleted": True}
    assert get(f"/images/{query_id}", "/images/{image_id}").status_code == 404


# Generated requests, with the key. Trainings are left out: a generated valid body would start
# a real training of up to 500 epochs; the next test sends them without the key.
@schema.exclude(operation_id="startTraining").parametrize()
@FUZZ_SETTINGS
def test_generated_requests_conform(case, service):
    case.call_and_validate(base_url=service.api, headers=service.auth, checks=CHECKS)


@schema.include(operation_id="startTraining").parametrize()
@FUZZ_SETTINGS
def test_generated_trainings_without_the_key_are_refused(case, service):
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}
    response = case.call_and_validate(base_url=service.api, checks=CHECKS)
    if case.method.upper() == "POST":  # the coverage phase also tries undeclared methods
        assert response.status_code == 401
