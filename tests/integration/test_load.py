"""Load: many searches from concurrent clients against the running service, none lost.

Each client posts a search and holds ``GET /jobs/{id}?wait=`` until it is done, then sends
the next one, as a real client would. By default 200 searches (a few minutes on the 2-core
CI machine); the full figure of the issue is ``LOAD_SEARCHES=1000``:

    LOAD_SEARCHES=1000 .venv/bin/python -m pytest -s tests/integration/test_load.py

Traffic stays on loopback; the run is bounded in count (LOAD_SEARCHES) and in time
(LOAD_TIME_LIMIT_SECONDS): a search not done by then counts as lost.
"""

import os
import statistics
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

pytestmark = pytest.mark.integration

SEARCHES = int(os.environ.get("LOAD_SEARCHES", "200"))
CLIENTS = int(os.environ.get("LOAD_CLIENTS", "16"))
TIME_LIMIT = float(os.environ.get("LOAD_TIME_LIMIT_SECONDS", "1200"))
K = 5


@dataclass
class LoadReport:
    searches: int
    clients: int
    latencies: list[float] = field(default_factory=list)  # seconds, post to done
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # job ids never done in time
    embed_ms: list[float] = field(default_factory=list)  # the vgg16 worker's own time
    wall_seconds: float = 0.0

    def percentile(self, q: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    def summary(self) -> str:
        done = len(self.latencies)
        return (
            f"{self.searches} searches from {self.clients} clients in {self.wall_seconds:.0f} s "
            f"({done / self.wall_seconds:.1f}/s): {done} done, {len(self.errors)} errors, "
            f"{len(self.lost)} lost; latency p50 {self.percentile(50):.2f} s, "
            f"p95 {self.percentile(95):.2f} s, max {max(self.latencies, default=0):.2f} s; "
            f"vgg16 embedding per query: median {statistics.median(self.embed_ms or [0]):.0f} ms"
        )


def run_load(
    api: str, queries: list[tuple[str, bytes]], searches: int, clients: int, time_limit: float
) -> LoadReport:
    """``searches`` searches from ``clients`` threads; each checks its answer."""
    report = LoadReport(searches, clients)
    lock = threading.Lock()
    next_search = iter(range(searches))
    started = time.monotonic()
    deadline = started + time_limit

    def take() -> int | None:
        with lock:
            return next(next_search, None)

    def record(kind: str, value) -> None:
        with lock:
            getattr(report, kind).append(value)

    def one_search(session: requests.Session, n: int) -> None:
        expected, data = queries[n % len(queries)]
        begun = time.monotonic()
        response = session.post(
            f"{api}/searches", files={"file": ("q.jpg", data)}, data={"k": str(K)}, timeout=30
        )
        if response.status_code != 202:
            record("errors", f"POST {response.status_code}: {response.text[:200]}")
            return
        job_id = response.json()["job_id"]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                record("lost", job_id)
                return
            wait = min(10.0, remaining)
            polled = session.get(f"{api}/jobs/{job_id}", params={"wait": wait}, timeout=wait + 30)
            if polled.status_code != 200:
                record("errors", f"GET {polled.status_code}: {polled.text[:200]}")
                return
            job = polled.json()
            if job["status"] in ("done", "failed"):
                break
        vgg16 = job["methods"]["vgg16"]
        if job["status"] != "done" or vgg16["status"] != "done":
            record("errors", f"job {job_id} {job['status']}: {job['methods']}")
        elif [r["id"] for r in vgg16["results"]][:1] != [expected]:
            record("errors", f"job {job_id}: {expected} not first in {vgg16['results'][:2]}")
        elif job["methods"]["autoencoder"]["status"] != "done":
            record("errors", f"job {job_id}: autoencoder {job['methods']['autoencoder']}")
        else:
            record("latencies", time.monotonic() - begun)
            record("embed_ms", vgg16.get("timings_ms", {}).get("embed", 0.0))

    def client() -> None:
        with requests.Session() as session:
            while (n := take()) is not None and time.monotonic() < deadline:
                try:
                    one_search(session, n)
                except (requests.RequestException, ValueError, KeyError) as err:
                    record("errors", f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit + 120)
    report.wall_seconds = time.monotonic() - started
    return report


@pytest.fixture(scope="module")
def queries(service, sample_images) -> list[tuple[str, bytes]]:
    """One photo of each product indexed; each is a query that must find itself first."""
    chosen = {f"{product}-0": paths[0] for product, paths in sample_images.items()}
    job = service.wait(service.add_images(list(chosen.values()), ids=list(chosen))["job_id"])
    assert job["status"] == "done", job
    return [(image_id, path.read_bytes()) for image_id, path in chosen.items()]


def test_concurrent_searches_are_all_answered(service, queries, record_property):
    report = run_load(service.api, queries, SEARCHES, CLIENTS, TIME_LIMIT)
    print(f"\nload: {report.summary()}")
    record_property("load", report.summary())
    assert report.errors == [], report.errors[:5]
    assert report.lost == [], f"{len(report.lost)} searches never finished"
    assert len(report.latencies) == SEARCHES

    # Afterwards nothing is left waiting and every queue still has its worker.
    health = requests.get(f"{service.api}/health", timeout=10).json()
    assert health["status"] == "ok", health
    assert all(entry["waiting"] == 0 for entry in health["queues"].values()), health
