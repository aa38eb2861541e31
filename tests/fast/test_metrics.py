"""/metrics of the gateway (against a real Redis) and the worker metrics server."""

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.app import create_app
from services.gateway.metrics import METRIC_NAMES
from services.gateway.settings import GatewaySettings
from shared import names
from shared.images import canonicalize
from shared.index_store import IndexStore
from shared.runtime.vector_index import vector_to_bytes
from shared.runtime.worker_metrics import observe_batch, observe_search, start_metrics_server
from tests.conftest import fresh_database
from tests.helpers.images import solid


def scrape(text: str) -> dict[str, list]:
    """Metric family name -> its samples (name, labels, value)."""
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return families


@pytest.fixture
def gateway(redis_url):
    url = fresh_database(redis_url)
    app = create_app(GatewaySettings(redis_url=url, api_key="metrics-test-key"))
    yield app
    app.extensions["redis"].flushdb()


def test_metrics_after_a_few_requests(gateway):
    client = gateway.test_client()
    redis = gateway.extensions["redis"]
    image = canonicalize(solid((200, 40, 40), (32, 24), "JPEG"), max_side=512, max_pixels=10**6)
    gateway.extensions["catalogue"].put("red-1", image, filename="red.jpg", metadata={})
    store = IndexStore(redis)
    store.add_vectors("vgg16", "vgg16-test", {"red-1": vector_to_bytes(np.ones(4, np.float32))})
    store.activate("vgg16", "vgg16-test", previous=None)
    redis.rpush("vgg16.index", "a waiting task", "another")

    assert client.get("/api/v1/images/red-1").status_code == 200
    assert client.get("/api/v1/images/red-1").status_code == 200
    assert client.get("/api/v1/images/nobody").status_code == 404
    assert client.delete("/api/v1/images/red-1").status_code == 401
    assert client.get("/no/such/page").status_code == 404
    artifact = "/api/v1/models/autoencoder/versions/ae-none/preview.png"
    assert client.get(artifact).status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    metrics = scrape(response.get_data(as_text=True))

    missing = {name.removesuffix("_total") for name in METRIC_NAMES} - set(metrics)
    assert missing == set()
    requests_total = {
        (s[1]["route"], s[1]["method"], s[1]["status"]): s[2]
        for s in metrics["imgsearch_http_requests"]
        if s[0] == "imgsearch_http_requests_total"
    }
    # Labelled by URL rule, not by raw path: ids never become label values.
    assert requests_total[("/api/v1/images/<image_id>", "GET", "200")] == 2
    assert requests_total[("/api/v1/images/<image_id>", "GET", "404")] == 1
    assert requests_total[("/api/v1/images/<image_id>", "DELETE", "401")] == 1
    assert requests_total[("<unmatched>", "GET", "404")] == 1
    assert not any("red-1" in route or "nobody" in route for route, _, _ in requests_total)
    # A converter is not part of the route's name.
    artifact_route = "/api/v1/models/autoencoder/versions/<version>/<artifact>.png"
    assert requests_total[(artifact_route, "GET", "404")] == 1
    # No *_created series beside the counters and histograms.
    samples = [s[0] for family in metrics.values() for s in family]
    assert not [name for name in samples if name.endswith("_created")]
    counts = {
        s[1]["route"]: s[2]
        for s in metrics["imgsearch_http_request_duration_seconds"]
        if s[0].endswith("_count") and s[1]["status"] == "200"
    }
    assert counts["/api/v1/images/<image_id>"] == 2

    gauges = {
        (name, tuple(sorted(labels.items()))): value
        for samples in metrics.values()
        for name, labels, value in samples
    }
    assert gauges[("imgsearch_redis_up", ())] == 1
    assert gauges[("imgsearch_catalogue_images", ())] == 1
    for queue in names.all_queues():
        expected = 2 if queue == "vgg16.index" else 0
        assert gauges[("imgsearch_queue_depth", (("queue", queue),))] == expected
    assert gauges[("imgsearch_index_size", (("method", "vgg16"),))] == 1
    assert gauges[("imgsearch_index_size", (("method", "autoencoder"),))] == 0
    assert gauges[("imgsearch_model_info", (("method", "vgg16"), ("version", "vgg16-test")))] == 1


def test_a_scrape_answers_when_redis_is_down():
    app = create_app(GatewaySettings(redis_url="redis://127.0.0.1:9/0", redis_timeout_seconds=0.5))
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    metrics = scrape(response.get_data(as_text=True))
    assert metrics["imgsearch_redis_up"][0][2] == 0
    assert "imgsearch_queue_depth" not in metrics


def test_worker_metrics_server():
    assert start_metrics_server(None) is None  # the default: off
    port = start_metrics_server(0, addr="127.0.0.1")  # 0: any free port
    assert port
    observe_search("vgg16", embed_seconds=0.03, search_seconds=0.002)
    observe_batch("vgg16", images=32, seconds=1.5)
    metrics = scrape(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    for name in (
        "imgsearch_worker_query_embed_seconds",
        "imgsearch_worker_index_search_seconds",
        "imgsearch_worker_batch_embed_seconds",
    ):
        count = [s for s in metrics[name] if s[0] == f"{name}_count" and s[1]["method"] == "vgg16"]
        assert count[0][2] >= 1, name
    embedded = [s for s in metrics["imgsearch_worker_embedded_images"] if s[0].endswith("_total")]
    assert embedded[0][2] >= 32
    assert not [s for family in metrics.values() for s in family if s[0].endswith("_created")]
