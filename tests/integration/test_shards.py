"""Sharded indexes end to end: one catalogue indexed with INDEX_SHARDS=1, then on a database
of its own with INDEX_SHARDS=2 served by two vgg16 workers (SHARDS=0 and SHARDS=1): the
same answers, one embedding per search, deletes seen at once, and a shard without a worker
ending its searches at the deadline with an error that names it.

The two systems run one after the other (each loads VGG16 in every worker), with real Redis,
real Celery workers and the real gateway, started as deploy/launcher.py starts them.
"""

import json
import re
import signal
import time
from pathlib import Path

import pytest
import requests

from deploy.launcher import Processes, free_port
from tests.conftest import SAMPLES, fresh_database
from tests.integration.conftest import Service, base_env, stopping
from tests.integration.system import (
    child,
    forget,
    kill,
    start_extra_gateway,
    start_sharded_vgg16,
    start_system,
)

CATALOGUE_SIZE = 30
K = 10
# The two systems embed the catalogue and the queries each on their own, and a difference
# in the last bits of a vector can move it to the next float16 step when stored (README.md,
# "Redis bytes per image"): scores agree to about 1e-4 (5e-5 seen), not float32's 1e-6.
# tests/fast/test_shards.py checks the merge itself exactly, on the same vectors.
SCORE_TOLERANCE = 5e-4
EMBED_COUNT = re.compile(r'^imgsearch_worker_query_embed_seconds_count\{method="vgg16"\} (\S+)$')
SEARCH_COUNT = re.compile(r'^imgsearch_worker_index_search_seconds_count\{method="vgg16"\} (\S+)$')


def photos() -> list[Path]:
    return sorted(SAMPLES.rglob("*.jpg"))


def catalogue_photos() -> list[Path]:
    return photos()[:CATALOGUE_SIZE]


def query_photos() -> list[Path]:
    """Three catalogue images and two that are not in it."""
    inside = catalogue_photos()
    return [inside[0], inside[11], inside[25], *photos()[CATALOGUE_SIZE : CATALOGUE_SIZE + 2]]


def image_id(path: Path) -> str:
    return f"{path.parent.name}-{path.stem}"


def index_catalogue(service: Service) -> None:
    """Upload the catalogue and wait for vgg16 to index it (no autoencoder worker runs)."""
    paths = catalogue_photos()
    job_id = service.add_images(paths, [image_id(p) for p in paths])["job_id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        view = requests.get(f"{service.api}/jobs/{job_id}", params={"wait": 5}, timeout=15).json()
        if view["methods"]["vgg16"]["status"] in ("done", "failed"):
            assert view["methods"]["vgg16"]["status"] == "done", view
            assert view["methods"]["vgg16"]["embedded"] == len(paths), view
            return
    raise TimeoutError("vgg16 did not index the catalogue")


def vgg16_search(service: Service, path: Path) -> dict:
    """A vgg16 search's method outcome."""
    view = service.search_and_wait(path, k=K, methods="vgg16")
    outcome = view["methods"]["vgg16"]
    assert outcome["status"] == "done", view
    return outcome


def worker_counts(port: int) -> tuple[float, float]:
    """(query embeddings, index searches) a worker process has counted."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    embeds = searches = 0.0
    for line in text.splitlines():
        if match := EMBED_COUNT.match(line):
            embeds = float(match.group(1))
        elif match := SEARCH_COUNT.match(line):
            searches = float(match.group(1))
    return embeds, searches


@pytest.fixture(scope="module")
def unsharded(redis_url, tmp_path_factory) -> dict[str, dict]:
    """Each query's vgg16 outcome on the catalogue indexed with INDEX_SHARDS=1."""
    log_dir = tmp_path_factory.mktemp("unsharded-logs")
    procs = Processes()
    with stopping(log_dir, procs):
        env = base_env(fresh_database(redis_url))
        service = start_system(procs, env, log_dir, workers=[("vgg16", ["search", "index"])])
        index_catalogue(service)
        return {path.name: vgg16_search(service, path) for path in query_photos()}


class ShardedSystem:
    def __init__(self, service: Service, metrics_ports: dict[int, int]) -> None:
        self.service = service
        self.metrics_ports = metrics_ports  # shard -> its worker's metrics port

    def counts(self) -> tuple[float, float]:
        """Query embeddings and index searches, summed over both workers."""
        per_worker = [worker_counts(port) for port in self.metrics_ports.values()]
        return sum(e for e, _ in per_worker), sum(s for _, s in per_worker)


@pytest.fixture(scope="module")
def sharded(unsharded, redis_url, tmp_path_factory) -> ShardedSystem:
    """The same catalogue with INDEX_SHARDS=2: one vgg16 worker per shard."""
    log_dir = tmp_path_factory.mktemp("sharded-logs")
    procs = Processes()
    with stopping(log_dir, procs):
        env = base_env(fresh_database(redis_url), INDEX_SHARDS="2")
        ports = {0: free_port(), 1: free_port()}
        workers = [
            (
                f"vgg16-shard-{shard}",
                roles,
                {"SHARDS": str(shard), "WORKER_METRICS_PORT": str(ports[shard])},
            )
            for shard, roles in [(0, ["search", "index"]), (1, ["search"])]
        ]
        service = start_sharded_vgg16(procs, env, log_dir, workers)
        index_catalogue(service)
        yield ShardedSystem(service, ports)


def test_sharded_answers_equal_the_unsharded_exact_ones(unsharded, sharded):
    for path in query_photos():
        expected, got = unsharded[path.name], vgg16_search(sharded.service, path)
        assert [r["id"] for r in got["results"]] == [r["id"] for r in expected["results"]]
        assert [r["rank"] for r in got["results"]] == list(range(1, K + 1))
        for mine, theirs in zip(got["results"], expected["results"], strict=True):
            assert mine["score"] == pytest.approx(theirs["score"], abs=SCORE_TOLERANCE)
        assert got["index_size"] == expected["index_size"] == got["total"] == CATALOGUE_SIZE
        assert "shards" not in expected and "shard_fan_out" not in got
        shards = got["shards"]
        assert [s["shard"] for s in shards] == [0, 1]
        assert sum(s["index_size"] for s in shards) == CATALOGUE_SIZE
        assert all(s["index_size"] > 0 for s in shards)
        # Each shard searched by its own worker, whichever took the search.
        assert "shards-0" in shards[0]["worker"] and "shards-1" in shards[1]["worker"]


def test_a_query_is_embedded_once_whatever_the_number_of_shards(sharded):
    embeds, searches = sharded.counts()
    queries = query_photos()
    for path in queries:
        outcome = vgg16_search(sharded.service, path)
        assert outcome["timings_ms"]["embedded_together"] >= 1
    embeds_after, searches_after = sharded.counts()
    assert embeds_after - embeds == len(queries)  # one embedding per search in all
    assert searches_after - searches == 2 * len(queries)  # every shard searched each time


def test_a_delete_leaves_the_sharded_answers_at_once(sharded):
    service = sharded.service
    query = catalogue_photos()[11]
    before = vgg16_search(service, query)
    gone = before["results"][0]["id"]
    assert gone == image_id(query)
    response = requests.delete(f"{service.api}/images/{gone}", headers=service.auth, timeout=10)
    assert response.status_code == 200, response.text
    after = vgg16_search(service, query)
    assert gone not in [r["id"] for r in after["results"]]
    # Every shard's replica replayed the delete before searching (not only the gateway's cut).
    assert after["index_size"] == sum(s["index_size"] for s in after["shards"])
    assert after["index_size"] == CATALOGUE_SIZE - 1
    assert [r["id"] for r in after["results"]][: K - 1] == [r["id"] for r in before["results"]][1:]


def test_a_shard_without_a_worker_ends_the_search_at_its_deadline(sharded, tmp_path):
    """Last: it stops shard 1's worker for good."""
    deadline = 4
    service = sharded.service
    short, gateway = start_extra_gateway(
        service, tmp_path, JOB_DEADLINE_SECONDS=json.dumps({"search": deadline})
    )
    try:
        worker = child(service.procs, "vgg16-shard-1")
        kill(worker, signal.SIGKILL)
        forget(service.procs, worker)
        job_id = short.search(query_photos()[0], k=K, methods="vgg16")
        started = time.monotonic()
        view = requests.get(f"{short.api}/jobs/{job_id}", params={"wait": 30}, timeout=40).json()
        answered_after = time.monotonic() - started
        vgg16 = view["methods"]["vgg16"]
        assert view["status"] == "failed", view
        assert (view["reason"], vgg16["reason"]) == ("timeout", "timeout")
        assert "index shard 1 of 2 (queue vgg16.search.shard-1)" in vgg16["message"]
        assert f"search deadline ({deadline} s" in vgg16["message"]
        assert "results" not in vgg16  # never shard 0's half as if it were the answer
        assert answered_after <= deadline + 3
    finally:
        kill(gateway, signal.SIGTERM)
        short.procs.stop()
