"""Benchmarks: ``make bench DATA=<folder of images>`` (writes bench/results.json and .md).

Measured in one run, so ratios compare like with like on a noisy machine:

1. The article's way as the baseline: ``model.predict`` on one image at a time, in a loop,
   VGG16 in float32, on the first BASELINE_IMAGES images of DATA.
2. Indexing through HTTP and Celery (upload to searchable) of the whole folder, with the
   system started as ``make run`` starts it, on a private Redis.
3. Query latency (submit to result, through ``?wait``), idle and during a bulk upload, for
   1 and 8 concurrent clients.
4. Exact search over synthetic unit vectors (512-d) at several index sizes: latency and memory.

Every timing is the median of REPEATS runs with the spread (min-max) beside it.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from client.api import ApiClient, image_files
from client.cli import index_folder
from deploy.launcher import (
    DEFAULT_WORKERS,
    Processes,
    free_port,
    gateway_healthy,
    start_gateway,
    start_redis,
    start_worker,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3
BASELINE_IMAGES = 40
QUERIES_PER_CLIENT = 10
EXACT_SIZES = (10_000, 100_000, 1_000_000)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "n": len(ordered),
    }


def baseline_per_image_predict(paths: list[Path]) -> float:
    """The article's loop: load one image, predict it alone, next; float32 VGG16. Images/s."""
    import keras

    from services.vgg16.model import build_feature_model
    from services.vgg16.settings import Vgg16Settings
    from services.vgg16.weights import resolve_weights

    keras.mixed_precision.set_global_policy("float32")
    model = build_feature_model("pool", resolve_weights(Vgg16Settings()))
    model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)  # warm-up
    started = time.perf_counter()
    for path in paths:
        image = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)))
        x = keras.applications.vgg16.preprocess_input(image[np.newaxis])
        model.predict(x, verbose=0)
    return len(paths) / (time.perf_counter() - started)


class System:
    """Redis, workers and gateway as `make run` starts them, on a private Redis."""

    def __init__(self, workdir: Path) -> None:
        self.procs = Processes()
        self.workdir = workdir

    def start(self) -> ApiClient:
        redis_url = start_redis(self.procs, self.workdir / "redis")
        env = dict(os.environ, REDIS_URL=redis_url, API_KEY="bench-key", PYTHONPATH=str(ROOT))
        logs = self.workdir / "logs"
        logs.mkdir()
        port = free_port()
        for method, roles in DEFAULT_WORKERS:
            start_worker(self.procs, method, roles, env, logs)
        start_gateway(self.procs, env, port, logs)
        base_url = f"http://127.0.0.1:{port}"
        queues = {f"{m}.{r}" for m, roles in DEFAULT_WORKERS for r in roles}
        wait_until(lambda: gateway_healthy(base_url, queues), 300, "workers", self.procs)
        return ApiClient(base_url, "bench-key")

    def stop(self) -> None:
        self.procs.stop()


def query_latencies(client: ApiClient, queries: list[Path], clients: int) -> list[float]:
    def one(path: Path) -> float:
        started = time.perf_counter()
        job = client.wait(client.search(path, k=10)["job_id"])
        if job["status"] != "done":
            raise RuntimeError(f"search failed: {job}")
        return time.perf_counter() - started

    work = [queries[i % len(queries)] for i in range(clients * QUERIES_PER_CLIENT)]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, work))


def bench_service(data: Path, workdir: Path) -> dict[str, Any]:
    paths = image_files(data)
    queries = paths[:: max(1, len(paths) // 20)][:20]
    results: dict[str, Any] = {"images": len(paths)}
    rates = []
    for run in range(REPEATS):
        system = System(workdir / f"run{run}")
        try:
            client = system.start()
            summary = index_folder(client, data, quiet=True)
            rates.append(summary.added / summary.seconds)
            if run == 0:
                results["index_failed"] = len(summary.failed)
                latency = {}
                for clients in (1, 8):
                    latency[f"idle_{clients}_clients"] = percentiles(
                        query_latencies(client, queries, clients)
                    )
                # The same queries while the catalogue is indexed again under other ids
                # (a bulk upload of the whole folder, shifted by one byte so it is new).
                latency.update(_latency_during_bulk(client, data, queries, workdir))
                results["query_latency"] = latency
        finally:
            system.stop()
    results["index_images_per_second"] = spread(rates)
    return results


def _latency_during_bulk(client, data: Path, queries: list[Path], workdir: Path) -> dict:
    copy = workdir / "bulk-copy"
    for path in image_files(data):
        target = copy / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes() + b"\0")  # new content hash, same pixels
    done = threading.Event()
    uploader = threading.Thread(
        target=lambda: (index_folder(client, copy, quiet=True), done.set()), daemon=True
    )
    uploader.start()
    time.sleep(3)  # let the indexing queue fill
    measured = {}
    for clients in (1, 8):
        if done.is_set():
            break
        measured[f"bulk_{clients}_clients"] = percentiles(query_latencies(client, queries, clients))
    measured["bulk_still_running_at_end"] = not done.is_set()
    uploader.join()
    shutil.rmtree(copy)
    return measured


def bench_exact_search(sizes=EXACT_SIZES, dim: int = 512) -> list[dict[str, Any]]:
    """Exact search latency and memory over synthetic unit vectors (one matrix product)."""
    from shared.vector_index import VectorIndex

    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        index = VectorIndex(dim, "cosine", capacity=size)
        for start in range(0, size, 50_000):
            block = rng.standard_normal((min(50_000, size - start), dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            index.upsert([f"v{start + i}" for i in range(len(block))], block)
        query = rng.standard_normal(dim, dtype=np.float32)
        index.search(query, 10)  # warm-up
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            index.search(query, 10)
            timings.append(time.perf_counter() - started)
        rows.append(
            {
                "vectors": size,
                "exact": percentiles(timings),
                "bytes_per_vector": dim * 4 + 4,  # float32 row + squared norm (ids aside)
                "matrix_mib": round(size * dim * 4 / 2**20, 1),
            }
        )
        del index
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}; data: {report['data']} ({report['service']['images']} "
        "images); medians of several runs, spread in brackets.",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    rate = report["service"]["index_images_per_second"]
    base = report["baseline_images_per_second"]
    lines.append(
        f"| indexing through HTTP + Celery, both methods, upload to searchable | "
        f"{rate['median']:.1f} img/s [{rate['min']:.1f}-{rate['max']:.1f}] |"
    )
    lines.append(
        f"| the article's per-image `predict` loop (VGG16 float32) | "
        f"{base['median']:.1f} img/s [{base['min']:.1f}-{base['max']:.1f}] |"
    )
    lines.append(f"| ratio | {rate['median'] / base['median']:.1f}x |")
    for name, value in report["service"].get("query_latency", {}).items():
        if isinstance(value, dict):
            lines.append(
                f"| query latency, {name.replace('_', ' ')} | p50 {value['p50_ms']} ms, "
                f"p95 {value['p95_ms']} ms (n={value['n']}) |"
            )
    for row in report["exact_search"]:
        lines.append(
            f"| exact search, {row['vectors']:,} vectors of 512-d | p50 {row['exact']['p50_ms']} "
            f"ms, p95 {row['exact']['p95_ms']} ms, {row['matrix_mib']} MiB |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of images")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--skip-service", action="store_true")
    args = parser.parse_args()
    paths = image_files(args.data)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()}",
        "data": str(args.data),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["baseline_images_per_second"] = spread(
        [baseline_per_image_predict(paths[:BASELINE_IMAGES]) for _ in range(REPEATS)]
    )
    with tempfile.TemporaryDirectory() as workdir:
        report["service"] = (
            {"images": len(paths), "index_images_per_second": spread([0.0])}
            if args.skip_service
            else bench_service(args.data, Path(workdir))
        )
    report["exact_search"] = bench_exact_search()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
