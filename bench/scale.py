"""Sharded search at scale: the same synthetic index split into S = 1, 2 and 4 shards.

``python -m bench.scale [--vectors 1000000] [--shards 1,2,4]`` (``make bench-scale``) writes
that many clustered 512-d unit vectors (as ``make bench``'s, stored as the service stores
them: ``IndexStore.add_vectors`` with ``vector_to_bytes``, each with a catalogue entry) to a
private redis-server in the layout of each shard count, then starts one process per shard,
each holding the shard's ``IndexReplica`` as a worker does (loaded from Redis, HNSW graph
built above ``APPROXIMATE_INDEX_MIN_VECTORS``). Each query vector goes to every shard process
and their top 10s are merged by ``shared.shards.merge_top_k``, as the gateway merges them.

Reported per shard count: memory per replica (growth of the process's resident memory from
before loading to after its graph is built), load and graph-build seconds, worker time
(the slowest shard's ``IndexReplica.search``, log replay included), the fan-out and merge
(sending the vector to every shard, each searching, merging; processes talk over pipes
where the service sends Celery tasks, whose round trip and the query's embedding come on
top: README.md, "Sharded search at 1M vectors") and recall@10 against exact search over
the whole index, and Redis' own ``used_memory`` per vector of the layout. The shard
processes share this machine's cores; one replica per machine would not. Writes
var/bench/scale.json and .md.
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import redis

from bench.gateway_memory import memory_kib
from bench.run import percentiles, synthetic_vectors
from deploy.launcher import Processes, start_redis
from shared import keys
from shared.catalogue import ImageMeta
from shared.index_store import IndexStore
from shared.runtime.vector_index import IndexReplica, decode_vector, vector_to_bytes
from shared.settings import CommonSettings
from shared.shards import merge_top_k

ROOT = Path(__file__).resolve().parent.parent
METHOD: Final = "vgg16"
VERSION: Final = "vgg16-imagenet-pool512"
DIM: Final = 512
K: Final = 10
WRITE_CHUNK: Final = 1_000
BLOCK: Final = 50_000
GRAPH_TIMEOUT_SECONDS: Final = 3_600


def image_id(n: int) -> str:
    return f"{n:032x}"


def resident_bytes() -> int:
    return 1024 * memory_kib(os.getpid(), "VmRSS")


def write_catalogue(client: redis.Redis, count: int) -> None:
    """A catalogue entry per vector: the index's write script stores vectors of entries only."""
    for start in range(0, count, 10_000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + 10_000, count)):
            meta = ImageMeta(image_id(n), f"{n:064x}", 512, 512, None, "jpeg", 1.8e9 + n)
            pipe.set(keys.catalogue_meta(meta.id), meta.portable_json())
        pipe.execute()


def index_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match="index:*", count=10_000))


def write_index(client: redis.Redis, vectors: np.ndarray, shards: int) -> float:
    """The index in the layout of ``shards`` shards, through the workers' write script;
    returns Redis' used_memory growth per vector."""
    stale = index_keys(client)
    if stale:
        client.delete(*stale)
    before = int(client.info("memory")["used_memory"])
    store = IndexStore(client, shards=shards)
    for start in range(0, len(vectors), WRITE_CHUNK):
        rows = range(start, min(start + WRITE_CHUNK, len(vectors)))
        store.add_vectors(METHOD, VERSION, {image_id(n): vector_to_bytes(vectors[n]) for n in rows})
    return (int(client.info("memory")["used_memory"]) - before) / len(vectors)


def serve_shard(redis_url: str, shards: int, shard: int, conn) -> None:
    """One shard's replica, as a worker holds it: report its cost, then answer queries."""
    baseline = resident_bytes()
    store = IndexStore(redis.Redis.from_url(redis_url), shards=shards)
    replica = IndexReplica(
        store,
        METHOD,
        VERSION,
        DIM,
        "cosine",
        graph_min_vectors=CommonSettings().approximate_index_min_vectors,
        shard=shard,
    )
    started = time.perf_counter()
    replica.sync()
    loaded = time.perf_counter()
    replica.wait_for_graph(GRAPH_TIMEOUT_SECONDS)  # sync started the build if it is due
    graph = replica.graph is not None
    built = time.perf_counter()
    conn.send(
        {
            "shard": shard,
            "vectors": len(replica.index),
            "load_seconds": round(loaded - started, 1),
            "graph_seconds": round(built - loaded, 1) if graph else None,
            "resident_growth_bytes": resident_bytes() - baseline,
        }
    )
    while (query := conn.recv()) is not None:
        searched = time.perf_counter()
        hits = replica.search(np.frombuffer(query, np.float32), K)
        conn.send(
            (
                [(hit.id, hit.score) for hit in hits],
                time.perf_counter() - searched,
                replica.last_search_kind,
            )
        )


def exact_top_k(stored: np.ndarray, queries: np.ndarray) -> list[list[str]]:
    """Exact top K of each query over the whole index, ties by id, as VectorIndex ranks."""
    best: list[list[tuple[float, str]]] = [[] for _ in queries]
    for start in range(0, len(stored), BLOCK):
        scores = queries @ stored[start : start + BLOCK].T
        top = np.argpartition(-scores, K, axis=1)[:, : K + 1]
        for q, rows in enumerate(top):
            best[q] += [(-float(scores[q, r]), image_id(start + int(r))) for r in rows]
            best[q] = sorted(best[q])[: K + 1]
    return [[i for _, i in sorted(found)[:K]] for found in best]


def measure(redis_url: str, shards: int, queries: np.ndarray, truth: list[list[str]]) -> dict:
    spawn = multiprocessing.get_context("spawn")  # a clean interpreter per shard, as a worker
    pipes, children = [], []
    for shard in range(shards):
        parent, child = spawn.Pipe()
        process = spawn.Process(target=serve_shard, args=(redis_url, shards, shard, child))
        process.start()
        pipes.append(parent)
        children.append(process)
    try:
        replicas = [pipe.recv() for pipe in pipes]
        worker, end_to_end, recalls, kinds = [], [], [], set()
        for n, query in enumerate(queries):
            started = time.perf_counter()
            for pipe in pipes:
                pipe.send(query.astype(np.float32).tobytes())
            answers = [pipe.recv() for pipe in pipes]
            merged = merge_top_k(
                [hits for hits, _, _ in answers], K, True, lambda h: h[1], lambda h: h[0]
            )
            finished = time.perf_counter()
            if n < 5:
                continue  # warm-up: first searches touch cold pages
            end_to_end.append(finished - started)
            worker.append(max(seconds for _, seconds, _ in answers))
            kinds.update(kind for _, _, kind in answers)
            recalls.append(len({i for i, _ in merged} & set(truth[n])) / K)
    finally:
        for pipe in pipes:
            pipe.send(None)
        for process in children:
            process.join(60)
    growth = [r["resident_growth_bytes"] for r in replicas]
    return {
        "shards": shards,
        "vectors_per_shard": [r["vectors"] for r in replicas],
        "memory_per_replica_bytes": int(np.median(growth)),
        "load_seconds": max(r["load_seconds"] for r in replicas),
        "graph_seconds": max((r["graph_seconds"] or 0) for r in replicas),
        "search_kind": sorted(kinds),
        "worker": percentiles(worker),
        "end_to_end": percentiles(end_to_end),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "queries": len(recalls),
    }


def markdown(vectors: int, results: list[dict[str, Any]]) -> str:
    lines = [
        f"{vectors:,} clustered {DIM}-d vectors, one process per shard on this machine",
        "",
        "| shards | vectors per shard | memory per replica | load + graph build | worker p50 / p95 "
        "| fan-out end to end p50 / p95 | recall@10 | Redis bytes per vector |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['shards']} | {min(r['vectors_per_shard']):,}-{max(r['vectors_per_shard']):,} "
            f"| {r['memory_per_replica_bytes'] / 1e9:.2f} GB "
            f"| {r['load_seconds']:.0f} + {r['graph_seconds']:.0f} s "
            f"| {r['worker']['p50_ms']:.1f} / {r['worker']['p95_ms']:.1f} ms "
            f"| {r['end_to_end']['p50_ms']:.1f} / {r['end_to_end']['p95_ms']:.1f} ms "
            f"| {r['recall_at_10']:.3f} | {r['redis_bytes_per_vector']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--shards", default="1,2,4", help="shard counts, comma-separated")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    args = parser.parse_args(argv)
    shard_counts = [int(s) for s in args.shards.split(",")]
    rng = np.random.default_rng(args.vectors)
    # As stored: what every replica searches, and what exact search must rank.
    stored = np.concatenate(
        [
            np.stack([decode_vector(vector_to_bytes(row)) for row in block])
            for block in (
                synthetic_vectors(rng, min(BLOCK, args.vectors - start), DIM)
                for start in range(0, args.vectors, BLOCK)
            )
        ]
    )
    queries = synthetic_vectors(rng, args.queries + 5, DIM)
    truth = exact_top_k(stored, queries)
    procs = Processes()
    results = []
    scratch = tempfile.TemporaryDirectory(prefix="bench-scale-")  # its Redis' files
    try:
        redis_url = start_redis(procs, Path(scratch.name))
        client = redis.Redis.from_url(redis_url)
        client.config_set("appendonly", "no")  # a bench's data: no need to keep it on disk
        write_catalogue(client, args.vectors)
        for shards in shard_counts:
            redis_bytes = write_index(client, stored, shards)
            result = measure(redis_url, shards, queries, truth)
            result["redis_bytes_per_vector"] = round(redis_bytes)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        procs.stop()
        scratch.cleanup()
    table = markdown(args.vectors, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2))
    (args.out / "scale.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
