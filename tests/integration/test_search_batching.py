"""Searches waiting together in a worker's queue share one forward pass
(shared/runtime/search_batching.py).

Real workers with batching on (the default size) and a long wait for company, so that
searches sent within a fraction of a second are sure to land in one batch.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import requests
from celery.result import AsyncResult

from deploy.launcher import Processes, wait_until
from shared import keys, names
from shared.celery_app import make_celery
from shared.settings import CommonSettings
from tests.conftest import fresh_database
from tests.integration.conftest import Service, base_env, stopping
from tests.integration.system import CORE_WORKERS, start_system

WAIT_MS = 1000  # company is awaited this long: sends within it are batched for sure
# Scores of one query embedded alone or in a batch: oneDNN picks kernels by batch size and
# under bfloat16 they round differently; scores of the same query agree this closely
# (vgg16 cosine in bfloat16; autoencoder distances in float32 carry a ~5e-4 floor).
SCORE_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def batching(redis_url, tmp_path_factory, sample_images) -> Service:
    log_dir = tmp_path_factory.mktemp("logs")
    env = base_env(fresh_database(redis_url), SEARCH_BATCH_WAIT_MS=str(WAIT_MS))
    procs = Processes()
    with stopping(log_dir, procs):
        service = start_system(procs, env, log_dir, [*CORE_WORKERS, ("autoencoder", ["train"])])
        catalogue = [paths[0] for paths in sample_images.values()][:12]
        job = service.wait(service.add_images(catalogue)["job_id"])
        assert job["status"] == "done", job
        # An autoencoder model, so that both methods' search workers have queries to batch.
        assert service.wait(service.train(1), timeout=300)["status"] == "done"
        wait_until(
            lambda: (
                not requests.get(f"{service.api}/models/autoencoder", timeout=5).json()["building"]
            ),
            120,
            "the autoencoder's first index",
        )
        yield service


@pytest.fixture(scope="module")
def queries(sample_images) -> list[Path]:
    # Second photos of products: not in the catalogue, so ranks are a real ordering.
    return [paths[1] for paths in sample_images.values() if len(paths) > 1][:6]


def method_part(service: Service, job_id: str, method: str) -> dict:
    job = service.wait(job_id, timeout=120)
    assert job["status"] == "done", job
    assert job["methods"][method]["results"], job
    return job["methods"][method]


@pytest.mark.parametrize("method", ["vgg16", "autoencoder"])
def test_searches_sent_together_are_embedded_together_and_answer_as_alone(
    batching, queries, method
):
    alone = [
        method_part(batching, batching.search(q, k=8, methods=method), method) for q in queries
    ]
    job_ids = [batching.search(q, k=8, methods=method) for q in queries]
    together = [method_part(batching, job_id, method) for job_id in job_ids]

    assert [part["timings_ms"]["embedded_together"] for part in alone] == [1] * len(queries)
    assert max(part["timings_ms"]["embedded_together"] for part in together) > 1
    for single, batched in zip(alone, together, strict=True):
        assert [r["id"] for r in batched["results"]] == [r["id"] for r in single["results"]]
        for a, b in zip(single["results"], batched["results"], strict=True):
            assert b["score"] == pytest.approx(a["score"], abs=SCORE_TOLERANCE)


@pytest.fixture
def celery_client(batching):
    app = make_celery(CommonSettings(redis_url=batching.env["REDIS_URL"]), "test-client")
    yield app
    app.close()


def send_search(app, job_id: str, **options) -> AsyncResult:
    task = names.task_search("vgg16")
    return app.send_task(
        task,
        args=[job_id, keys.query_image(job_id), 3],
        task_id=f"{job_id}-vgg16",
        queue=names.queue_name("vgg16", names.SEARCH),
        **options,
    )


def final_state(result: AsyncResult, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while result.state not in ("SUCCESS", "FAILURE", "REVOKED"):
        assert time.monotonic() < deadline, f"{result.id} still {result.state}"
        time.sleep(0.1)
    return result.state


def test_a_query_expired_or_missing_in_a_batch_fails_alone(batching, celery_client, queries):
    client = redis.Redis.from_url(batching.env["REDIS_URL"])
    jobs = {name: f"batch-{name}-{uuid.uuid4().hex[:8]}" for name in ("a", "gone", "late", "b")}
    for name in ("a", "late", "b"):
        client.set(keys.query_image(jobs[name]), queries[0].read_bytes(), ex=600)

    sent = {
        "a": send_search(celery_client, jobs["a"]),
        # No image stored: the worker reads nothing for it.
        "gone": send_search(celery_client, jobs["gone"]),
        # Its deadline passes while it waits for company: it must not run.
        "late": send_search(
            celery_client, jobs["late"], expires=datetime.now(UTC) + timedelta(seconds=0.3)
        ),
        "b": send_search(celery_client, jobs["b"]),
    }
    states = {name: final_state(result) for name, result in sent.items()}

    assert states == {"a": "SUCCESS", "gone": "FAILURE", "late": "REVOKED", "b": "SUCCESS"}
    assert "QueryImageMissing" in repr(sent["gone"].result)
    answers = [sent[name].result for name in ("a", "b")]
    assert [a["timings_ms"]["embedded_together"] for a in answers] == [2, 2]
    assert answers[0]["results"] == answers[1]["results"]


def test_searches_held_for_a_batch_are_in_the_workers_registry(batching, celery_client):
    # The heartbeat renews the broker's clock of the messages in Celery's registry of
    # requests; a search waiting for company must be there, unacknowledged, like a running one.
    job_id = f"held-{uuid.uuid4().hex[:8]}"
    result = send_search(celery_client, job_id)
    deadline = time.monotonic() + WAIT_MS / 1000
    seen = []
    while not seen and time.monotonic() < deadline:
        replies = celery_client.control.inspect(timeout=0.3).reserved() or {}
        seen = [t for tasks in replies.values() for t in tasks if t["id"] == result.id]
    assert seen and seen[0]["acknowledged"] is False, replies
    assert final_state(result) == "FAILURE"  # no image stored for it
