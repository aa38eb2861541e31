"""Benchmarks: ``make bench DATA=<folder of images>`` (writes var/bench/results.json and .md).

Measured in one run, so ratios compare like with like on a noisy machine:

1. The article's way as the baseline: ``model.predict`` on one image at a time, in a loop,
   VGG16 in float32, on the first BASELINE_IMAGES images of DATA.
   And the vgg16 worker's embedder alone, in batches: in float32, and in bfloat16 (the
   ceiling of the service's vgg16 rate) before and after each indexing run of 2.
2. Indexing through HTTP and Celery (upload to searchable) of the whole folder, with the
   system started as ``make run`` starts it, on a private Redis: for both methods at once,
   and for each method (when its index holds the whole folder).
3. Query latency (submit to result, through ``?wait``), idle and during a bulk upload, for
   1 and 8 concurrent clients.
4. Exact and approximate (HNSW graph) search over synthetic unit vectors (512-d) at 10k, 100k
   and 1M vectors: latency, build time, memory per vector, and the graph's recall@10.

Throughputs are medians of REPEATS runs with the spread (min-max) beside them; latencies are
percentiles over many queries.
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

from client.api import ApiClient, content_id, image_files
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
from shared.runtime.ml import cpu_bfloat16_flags, decode_images

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3
BASELINE_IMAGES = 40
BARE_MODEL_IMAGES = 128  # four batches of 32
SEED_IMAGES = 64  # indexed first, to train the autoencoder on, and not counted
UPLOAD_BATCH = 32  # images per upload request of the throughput measurement
QUERIES_PER_CLIENT = 10
SEARCH_SIZES = (10_000, 100_000, 1_000_000)
UNIFORM_SIZE = 100_000  # the graph's worst case, measured at one size
SEARCH_QUERIES = 200


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


class BareModel:
    """The ceiling of the service's vgg16 rate: the worker's embedder alone, batch by batch,
    on images decoded beforehand (no HTTP, queue or Redis). Built and decoded once, timed
    as often as needed."""

    def __init__(self, paths: list[Path], precision: str) -> None:
        from services.vgg16.model import Vgg16Embedder
        from services.vgg16.settings import Vgg16Settings

        self.embedder = Vgg16Embedder(Vgg16Settings(vgg16_precision=precision))
        self.embedder.load()
        jpegs = [path.read_bytes() for path in paths]
        self.images = decode_images(jpegs, self.embedder.input_size)

    def images_per_second(self) -> float:
        started = time.perf_counter()
        self.embedder.embed(self.images)
        return len(self.images) / (time.perf_counter() - started)


def cpu_description() -> str:
    """Processor, core count and which bfloat16 units oneDNN can use (AMX matters most)."""
    bf16 = ", ".join(sorted(cpu_bfloat16_flags())) or "no bfloat16 units"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores ({bf16})"


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


def query_latencies(
    client: ApiClient,
    queries: list[Path],
    clients: int,
    per_client: int = QUERIES_PER_CLIENT,
    methods: str | None = None,
) -> list[float]:
    def one(path: Path) -> float:
        started = time.perf_counter()
        job = client.wait(client.search(path, k=10, methods=methods)["job_id"])
        if job["status"] != "done":
            raise RuntimeError(f"search failed: {job}")
        return time.perf_counter() - started

    work = [queries[i % len(queries)] for i in range(clients * per_client)]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, work))


def bench_service(data: Path, workdir: Path) -> dict[str, Any]:
    paths = image_files(data)
    queries = paths[:: max(1, len(paths) // 20)][:20]
    results: dict[str, Any] = {"images": len(paths)}
    rates: dict[str, list[float]] = {"all": []}
    ceilings: list[float] = []
    ceiling = BareModel(paths[:BARE_MODEL_IMAGES], "bfloat16")
    for run in range(REPEATS):
        # The ceiling right before and after each run: this host's speed drifts within
        # minutes (README.md, "Catalogue scale"), so service and model compare only side by
        # side.
        ceiling_before = ceiling.images_per_second()
        system = System(workdir / f"run{run}")
        try:
            client = system.start()
            _train_small_autoencoder(client, paths[:SEED_IMAGES], workdir / f"seed{run}")
            summary, method_seconds = _index_watching_methods(client, data, len(paths))
            ceiling_after = ceiling.images_per_second()
            ceilings.append((ceiling_before + ceiling_after) / 2)
            rates["all"].append(summary["added"] / summary["seconds"])
            for method, seconds in method_seconds.items():
                rates.setdefault(method, []).append(summary["added"] / seconds)
            if run == 0:
                results["index_failed_jobs"] = summary["failed_jobs"]
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
    results["index_images_per_second"] = {name: spread(r) for name, r in rates.items()}
    results["ceiling_images_per_second"] = spread(ceilings)
    results["vgg16_share_of_ceiling"] = spread(
        [rate / ceiling for rate, ceiling in zip(rates["vgg16"], ceilings, strict=True)]
    )
    return results


def _train_small_autoencoder(client: ApiClient, seed: list[Path], folder: Path) -> None:
    """Index a few images and train the autoencoder on them for one epoch, so that both
    methods embed what is uploaded next (its quality does not change its speed)."""
    folder.mkdir(parents=True)
    for n, path in enumerate(seed):
        shutil.copyfile(path, folder / f"{n}{path.suffix}")  # same bytes: same content id
    index_folder(client, folder, quiet=True)
    job_id = client.request("POST", "/models/autoencoder/trainings", json={"epochs": 1})["job_id"]
    if client.wait(job_id)["status"] != "done":
        raise RuntimeError("the autoencoder's benchmark training failed")
    wait_until(
        lambda: not client.request("GET", "/models/autoencoder")["building"],
        300,
        "the autoencoder's first index",
    )


def _index_watching_methods(client: ApiClient, data: Path, total: int):
    """Upload DATA in batches without waiting, as a bulk client with many uploads in flight
    would, and note when each method's index holds it all (upload to searchable). Waiting
    for each batch's job, as `imgsearch index` does, would pace both methods by the slower."""
    done_at: dict[str, float] = {}
    finished = threading.Event()
    ids = {path: content_id(path.read_bytes()) for path in image_files(data)}
    existing = client.existing(list(ids.values()))
    todo = [path for path, image_id in ids.items() if image_id not in existing]
    started = time.perf_counter()

    def watch() -> None:
        while not finished.is_set():
            for method, state in client.request("GET", "/stats")["methods"].items():
                if method not in done_at and state["index_size"] >= total:
                    done_at[method] = time.perf_counter() - started
            finished.wait(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    jobs = [
        client.add_images(todo[i : i + UPLOAD_BATCH], root=data)["job_id"]
        for i in range(0, len(todo), UPLOAD_BATCH)
    ]
    failed = sum(client.wait(job_id)["status"] != "done" for job_id in jobs)
    seconds = time.perf_counter() - started
    finished.set()
    watcher.join()
    per_method = {m: done_at.get(m, seconds) for m in ("vgg16", "autoencoder")}
    return {"added": len(todo), "seconds": seconds, "failed_jobs": failed}, per_method


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


BATCHING_CLIENTS = (1, 2, 4, 8, 16)
BATCHING_CONFIGS = {"off": {"SEARCH_BATCH_SIZE": "1"}, "on": {}}  # "on": the defaults


def bench_search_batching(data: Path, workdir: Path, rounds: int) -> dict[str, Any]:
    """vgg16 searches at 1-16 concurrent clients, batching off and on side by side.

    Two vgg16 search workers run, one started with batching off, one with it on; only one
    consumes the search queue at a time (Celery's add/cancel_consumer). Each client count is
    measured ``rounds`` times with each, in ABBA order (off, on, on, off...), so that both
    see the same drift of a shared machine; medians over the rounds."""
    import redis

    from shared import keys
    from shared.celery_app import make_celery
    from shared.settings import CommonSettings

    paths = image_files(data)
    queries = paths[:: max(1, len(paths) // 20)][:20]
    gain = model_batch_gain(paths)
    print(f"the model alone: {gain}", flush=True)
    system = System(workdir)
    redis_url = start_redis(system.procs, workdir / "redis")
    env = dict(os.environ, REDIS_URL=redis_url, API_KEY="bench-key", PYTHONPATH=str(ROOT))
    logs = ROOT / "var" / "bench" / "batching-logs"  # kept: the workers log every batch
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    measured: dict[str, dict[int, list[dict[str, float]]]] = {c: {} for c in BATCHING_CONFIGS}
    control = make_celery(CommonSettings(redis_url=redis_url), "bench").control
    queue = "vgg16.search"
    try:
        for method, roles in DEFAULT_WORKERS:
            if roles != ["search"] or method != "vgg16":
                start_worker(system.procs, method, roles, env, logs)
        nodes = {}
        workers = redis.Redis.from_url(redis_url)
        for config, overrides in BATCHING_CONFIGS.items():
            process = start_worker(
                system.procs,
                "vgg16",
                ["search"],
                {**env, **overrides},
                logs,
                name=f"vgg16-search-batching-{config}",
            )

            def node(pid: int = process.pid) -> str | None:
                members = workers.zrange(keys.workers(queue), 0, -1)
                return next((m.decode() for m in members if f"-{pid}@".encode() in m), None)

            wait_until(lambda n=node: n() is not None, 300, f"worker {config}", system.procs)
            nodes[config] = node()
        port = free_port()
        start_gateway(system.procs, env, port, logs)
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: gateway_healthy(base_url, {queue}), 300, "gateway", system.procs)
        client = ApiClient(base_url, "bench-key")
        index_folder(client, data, quiet=True)

        def consume(config: str) -> None:
            for other, name in nodes.items():
                if other != config:
                    control.cancel_consumer(queue, destination=[name], reply=True, timeout=30)
            control.add_consumer(queue, destination=[nodes[config]], reply=True, timeout=30)

        for config in BATCHING_CONFIGS:
            consume(config)
            query_latencies(client, queries, 16, 2, "vgg16")  # warm-up, not counted
        for clients in BATCHING_CLIENTS:
            for round_ in range(rounds):
                order = list(BATCHING_CONFIGS)
                for config in order if round_ % 2 == 0 else order[::-1]:
                    consume(config)
                    started = time.perf_counter()
                    latencies = query_latencies(
                        client, queries, clients, max(3, 24 // clients), "vgg16"
                    )
                    row = percentiles(latencies)
                    row["qps"] = round(len(latencies) / (time.perf_counter() - started), 2)
                    measured[config].setdefault(clients, []).append(row)
                    print(
                        f"{clients} clients, round {round_}, batching {config}: {row}", flush=True
                    )
    finally:
        system.stop()
    return {
        "rounds": rounds,
        "model_batch_gain": gain,
        "clients": {
            config: {
                str(clients): {
                    what: round(statistics.median(r[what] for r in rows), 2)
                    for what in ("qps", "p50_ms", "p95_ms", "n")
                }
                for clients, rows in by_clients.items()
            }
            for config, by_clients in measured.items()
        },
        "runs": measured,
    }


def model_batch_gain(paths: list[Path], size: int = 16) -> dict[str, float]:
    """What batching can win at most: the vgg16 embedder (the workers' precision) on
    ``size`` images one by one, then in one batch; medians of REPEATS, side by side."""
    bare = BareModel(paths[:size], "auto")
    embed = bare.embedder.embed
    alone, together = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for i in range(len(bare.images)):
            embed(bare.images[i : i + 1])
        alone.append((time.perf_counter() - started) / len(bare.images))
        started = time.perf_counter()
        embed(bare.images)
        together.append((time.perf_counter() - started) / len(bare.images))
    one, batched = statistics.median(alone), statistics.median(together)
    return {
        "precision": bare.embedder.precision,
        "alone_ms_per_image": round(1000 * one, 1),
        f"batch_of_{size}_ms_per_image": round(1000 * batched, 1),
        "gain": round(one / batched, 2),
    }


def batching_markdown(report: dict[str, Any]) -> str:
    result = report["search_batching"]
    gain = result["model_batch_gain"]
    batched = next(v for k, v in gain.items() if k.startswith("batch_of_"))
    lines = [
        f"Machine: {report['machine']}; data: {report['data']}; vgg16 searches end to end "
        f"(submit to result), medians of {result['rounds']} rounds of each, batching off and on "
        "in turn (ABBA) at each client count. The model alone "
        f"({gain['precision']}): {gain['alone_ms_per_image']} ms an image alone, "
        f"{batched} ms an image in a batch, {gain['gain']}x (what batching can win at most).",
        "",
        "| clients | off: queries/s | off: p50 / p95 | on: queries/s | on: p50 / p95 "
        "| p50 on / off |",
        "|---|---|---|---|---|---|",
    ]
    off, on = result["clients"]["off"], result["clients"]["on"]
    for clients in off:
        a, b = off[clients], on[clients]
        lines.append(
            f"| {clients} | {a['qps']:.2f} | {a['p50_ms']:.0f} / {a['p95_ms']:.0f} ms "
            f"| {b['qps']:.2f} | {b['p50_ms']:.0f} / {b['p95_ms']:.0f} ms "
            f"| {b['p50_ms'] / a['p50_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def synthetic_vectors(rng, n: int, dim: int, clustered: bool = True) -> np.ndarray:
    """Unit vectors. Clustered (Gaussian blobs around 1,000 centres) resembles real image
    embeddings, which crowd around products and classes; uniform is HNSW's worst case."""
    if clustered:
        centres = np.random.default_rng(7).standard_normal((1_000, dim), dtype=np.float32)
        rows = centres[rng.integers(0, len(centres), n)]
        rows += 0.8 * rng.standard_normal((n, dim), dtype=np.float32)
    else:
        rows = rng.standard_normal((n, dim), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def bench_search(sizes=SEARCH_SIZES, dim: int = 512) -> list[dict[str, Any]]:
    """Exact and graph (HNSW + exact re-ranking) search over synthetic vectors, through the
    same calls a worker replica makes: latency, build time, memory, recall@10 vs exact."""
    from shared.runtime.vector_index import GraphIndex, VectorIndex, candidate_count

    rows = []
    cases = [(size, True) for size in sizes] + [(UNIFORM_SIZE, False)]
    for size, clustered in cases:
        rng = np.random.default_rng(size)
        exact = VectorIndex(dim, "cosine", capacity=size)
        graph = GraphIndex(dim, "cosine")
        build_seconds = 0.0
        for start in range(0, size, 50_000):
            block = synthetic_vectors(rng, min(50_000, size - start), dim, clustered)
            ids = [f"v{start + i}" for i in range(len(block))]
            exact.upsert(ids, block)
            started = time.perf_counter()
            graph.upsert(ids, block, threads=os.cpu_count() or 1)
            build_seconds += time.perf_counter() - started
        queries = synthetic_vectors(rng, SEARCH_QUERIES, dim, clustered)
        exact_times, graph_times, recalls = [], [], []
        for query in queries:
            started = time.perf_counter()
            truth = exact.search(query, 10)
            exact_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            found = exact.search_among(query, graph.candidates(query, candidate_count(10)), 10)
            graph_times.append(time.perf_counter() - started)
            recalls.append(len({h.id for h in truth} & {h.id for h in found}) / 10)
        rows.append(
            {
                "vectors": size,
                "data": "clustered" if clustered else "uniform",
                "exact": percentiles(exact_times),
                "graph": percentiles(graph_times),
                "graph_recall_at_10": round(float(np.mean(recalls)), 4),
                "graph_build_seconds": round(build_seconds, 1),
                # float32 row + squared norm; the graph's int8 copy and links come on top.
                "exact_bytes_per_vector": dim * 4 + 4,
                "graph_bytes_per_vector": round(graph.memory_bytes / size),
            }
        )
        print(f"search at {size:,} ({rows[-1]['data']}): {rows[-1]}", flush=True)
        del exact, graph
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}; data: {report['data']} ({report['service']['images']} "
        "images); medians of several runs, spread in brackets.",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    base = report["baseline_images_per_second"]
    lines.append(
        f"| the article's per-image `predict` loop (VGG16 float32): the baseline | "
        f"{base['median']:.1f} img/s [{base['min']:.1f}-{base['max']:.1f}] |"
    )
    bare = {"float32": report["bare_model_float32_images_per_second"]}
    if "ceiling_images_per_second" in report["service"]:
        bare["bfloat16, the ceiling"] = report["service"]["ceiling_images_per_second"]
    for what, rate in bare.items():
        lines.append(
            f"| VGG16 alone, batches of the worker's size, {what} | "
            f"{rate['median']:.1f} img/s [{rate['min']:.1f}-{rate['max']:.1f}], "
            f"{rate['median'] / base['median']:.1f}x the baseline |"
        )
    for name, rate in report["service"]["index_images_per_second"].items():
        what = "both methods" if name == "all" else name
        lines.append(
            f"| indexing through HTTP + Celery, upload to searchable, {what} | "
            f"{rate['median']:.1f} img/s [{rate['min']:.1f}-{rate['max']:.1f}], "
            f"{rate['median'] / base['median']:.1f}x the baseline |"
        )
    if "vgg16_share_of_ceiling" in report["service"]:
        share = report["service"]["vgg16_share_of_ceiling"]
        lines.append(
            f"| vgg16 indexing rate / the ceiling measured around it | {share['median']:.2f} "
            f"[{share['min']:.2f}-{share['max']:.2f}] |"
        )
    for name, value in report["service"].get("query_latency", {}).items():
        if isinstance(value, dict):
            lines.append(
                f"| query latency, {name.replace('_', ' ')} | p50 {value['p50_ms']} ms, "
                f"p95 {value['p95_ms']} ms (n={value['n']}) |"
            )
    lines += [
        "",
        "Search over synthetic unit vectors of 512-d (one query at a time, one core):",
        "",
        "| vectors | data | exact p50 / p95 | graph p50 / p95 | graph recall@10 | graph build "
        "| bytes per vector (exact + graph) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["search"]:
        exact, graph = row["exact"], row["graph"]
        lines.append(
            f"| {row['vectors']:,} | {row['data']} | {exact['p50_ms']} / {exact['p95_ms']} ms "
            f"| {graph['p50_ms']} / {graph['p95_ms']} ms | {row['graph_recall_at_10']:.3f} "
            f"| {row['graph_build_seconds']:.0f} s "
            f"| {row['exact_bytes_per_vector']} + {row['graph_bytes_per_vector']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of images")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "results")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument(
        "--search-batching",
        action="store_true",
        help="only compare vgg16 searches with batching off and on (var/bench/batching.*)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="--search-batching: rounds")
    args = parser.parse_args()
    paths = image_files(args.data)
    report: dict[str, Any] = {
        "machine": f"{cpu_description()}, {platform.system()}",
        "data": str(args.data),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.search_batching:
        with tempfile.TemporaryDirectory() as workdir:
            report["search_batching"] = bench_search_batching(args.data, Path(workdir), args.rounds)
        out = args.out.with_name("batching")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(batching_markdown(report))
        print(batching_markdown(report))
        return
    report["baseline_images_per_second"] = spread(
        [baseline_per_image_predict(paths[:BASELINE_IMAGES]) for _ in range(REPEATS)]
    )
    float32 = BareModel(paths[:BARE_MODEL_IMAGES], "float32")
    report["bare_model_float32_images_per_second"] = spread(
        [float32.images_per_second() for _ in range(REPEATS)]
    )
    del float32  # its memory, before the service runs
    with tempfile.TemporaryDirectory() as workdir:
        report["service"] = (
            {"images": len(paths), "index_images_per_second": {}}
            if args.skip_service
            else bench_service(args.data, Path(workdir))
        )
    report["search"] = bench_search()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
