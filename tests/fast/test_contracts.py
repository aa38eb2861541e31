"""The typed contract: request refusals, worker results, and a finished job's view computed
once (the gateway through Flask's test client, against a real Redis)."""

import json

import pytest
from pydantic import ValidationError

from services.gateway.app import create_app
from services.gateway.jobs import checked_result, merge_parts
from services.gateway.settings import GatewaySettings
from shared import keys
from shared.contracts import (
    Hit,
    IndexResult,
    SearchRequest,
    SearchResult,
    SearchTask,
    first_problem,
)
from shared.jobs import JobRecord, task_id


def refusal(model, data, **limits) -> tuple[int, str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, context=limits)
    return first_problem(caught.value)


def test_a_request_model_refuses_with_the_gateways_code_message_and_status():
    limits = {"default_k": 10, "max_k": 100}
    assert refusal(SearchRequest, {"files": 1, "k": "500", "methods": []}, **limits) == (
        400,
        "invalid_k",
        "'k' must be between 1 and 100, got 500",
    )
    assert refusal(SearchRequest, {"files": 2, "k": "x", "methods": []}, **limits)[1] == (
        "one_file_only"
    )
    search = SearchRequest.model_validate(
        {"files": 1, "k": "", "methods": ["vgg16, vgg16"]}, context=limits
    )
    assert (search.k, search.methods) == (10, ["vgg16"])


def test_task_payloads_travel_as_the_positional_arguments_workers_take():
    assert SearchTask(job_id="j", query_key="query:j", k=20).as_args() == ["j", "query:j", 20]


def test_a_worker_result_leaves_out_what_it_never_set():
    not_trained = SearchResult(method="autoencoder", results=[], reason="not_trained", message="m")
    assert not_trained.to_json() == {
        "reason": "not_trained",
        "message": "m",
        "method": "autoencoder",
        "results": [],
    }
    found = SearchResult(method="vgg16", results=[Hit(id="a", score=0.5, rank=1)])
    assert found.to_json()["results"] == [{"id": "a", "score": 0.5, "rank": 1}]


def test_the_gateway_fails_a_result_that_breaks_the_contract():
    good = IndexResult(method="vgg16", requested=2, embedded=2, already_indexed=0, gone=0)
    assert checked_result("index", good.to_json()) == good.to_json()
    broken = checked_result("search", {"method": "vgg16", "results": [{"id": "a"}]})
    assert broken["status"] == "failed" and "broke the contract" in broken["error"]


def test_parts_of_a_large_upload_merge_into_one_method_view():
    merged = merge_parts(
        [
            {"status": "done", "requested": 64, "embedded": 60, "already_indexed": 4, "gone": 0},
            {"status": "running"},
        ]
    )
    assert merged == {
        "status": "running",
        "parts": 2,
        "parts_done": 1,
        "requested": 64,
        "embedded": 60,
        "already_indexed": 4,
        "gone": 0,
    }


def test_a_finished_jobs_view_is_computed_once(redis_url, redis_client):
    """The second poll returns the stored view, whatever its task records say since."""
    database = redis_client.connection_pool.connection_kwargs["db"]
    app = create_app(GatewaySettings(redis_url=f"{redis_url.rsplit('/', 1)[0]}/{database}"))
    job = JobRecord(id="job1", kind="index", methods=["vgg16"], params={"images": 1})
    redis_client.set(keys.job(job.id), job.to_json())
    backend = app.extensions["celery"].backend
    result = IndexResult(method="vgg16", requested=1, embedded=1, already_indexed=0, gone=0)
    backend.store_result(task_id(job.id, "vgg16"), result.to_json(), "SUCCESS")
    client = app.test_client()

    first = client.get("/api/v1/jobs/job1").get_json()
    assert first["status"] == "done" and first["methods"]["vgg16"]["embedded"] == 1
    assert json.loads(redis_client.get(keys.job_view(job.id)))["view"] == first
    backend.store_result(task_id(job.id, "vgg16"), {**result.to_json(), "embedded": 0}, "SUCCESS")
    assert client.get("/api/v1/jobs/job1?wait=1").get_json() == first


def test_the_generated_document_marks_writes_with_a_padlock_and_reads_as_optional(redis_url):
    app = create_app(GatewaySettings(redis_url=redis_url))
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    assert spec["paths"]["/images"]["post"]["security"] == [{"ApiKey": []}]
    assert spec["paths"]["/images"]["get"]["security"] == [{}, {"ApiKey": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []
    k = spec["components"]["schemas"]["SearchForm"]["properties"]["k"]
    settings = app.extensions["settings"]
    assert (k["maximum"], k["default"]) == (settings.max_k, settings.default_k)


@pytest.mark.parametrize("path", ["/api/v1/docs", "/api/v1/docs/"])
def test_the_docs_page_answers_with_or_without_a_trailing_slash(redis_url, path):
    page = create_app(GatewaySettings(redis_url=redis_url)).test_client().get(path)
    assert page.status_code == 200
    assert 'data-spec-url="/api/v1/openapi.json"' in page.text
    assert 'href="/vendor/swagger-ui/swagger-ui.css"' in page.text
