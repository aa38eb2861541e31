"""Sharded indexes: the shard of an image, writes and reads across shards on a real Redis,
and the merge of per-shard top k lists against the exact top k of the whole matrix."""

import time
from collections import Counter

import numpy as np
import pydantic
import pytest

from shared import keys
from shared.index_store import IndexStore
from shared.runtime.vector_index import IndexReplica, VectorIndex, vector_to_bytes
from shared.settings import WorkerSettings
from shared.shards import group_by_shard, merge_top_k, shard_of
from tests.fast.test_vector_index import add_catalogue_entries, unit_rows


def test_the_shard_of_an_id_is_pinned_across_processes_and_releases():
    # Stored data depends on these: a change of the hash would strand every sharded vector.
    assert [shard_of("a", s) for s in (1, 2, 3, 4, 16)] == [0, 0, 1, 2, 10]
    assert [shard_of("img-0", s) for s in (2, 3, 4, 16)] == [0, 1, 0, 4]
    assert shard_of("3f1b0c7e9a2d4b6c8e0f1a2b3c4d5e6f", 4) == 3


def test_ids_spread_evenly_over_the_shards():
    counts = Counter(shard_of(f"image-{n}", 4) for n in range(20_000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(abs(count - 5_000) < 250 for count in counts.values()), counts


def test_doubling_the_shards_splits_shard_k_into_k_and_k_plus_s():
    for n in range(2_000):
        image_id = f"id{n}"
        assert shard_of(image_id, 6) in (shard_of(image_id, 3), shard_of(image_id, 3) + 3)


def test_group_by_shard_keeps_the_order_given():
    ids = [f"x{n}" for n in range(50)]
    groups = group_by_shard(ids, 3)
    assert sorted(i for group in groups.values() for i in group) == sorted(ids)
    for group in groups.values():
        assert group == [i for i in ids if i in group]


def test_one_shard_keeps_the_keys_of_unsharded_indexes():
    assert keys.index_vectors("vgg16", "v1") == "index:vgg16:v1:vectors"
    assert keys.index_log("vgg16", "v1", 0, 1) == "index:vgg16:v1:log"
    assert keys.index_epoch("vgg16", "v1", 1, 2) == "index:vgg16:v1:shard-1-of-2:epoch"


def test_writes_and_reads_span_every_shard(redis_client):
    store = IndexStore(redis_client, shards=3)
    ids = [f"img{n}" for n in range(30)]
    catalogue = add_catalogue_entries(redis_client, ids)
    vectors = {i: vector_to_bytes(np.array([n, 1.0])) for n, i in enumerate(ids)}
    assert store.add_vectors("vgg16", "v1", dict(list(vectors.items())[:20])) == 20

    assert store.size("vgg16", "v1") == 20
    assert store.missing("vgg16", "v1", ids) == ids[20:]
    assert store.add_vectors("vgg16", "v1", vectors) == 30  # an add again overwrites
    assert store.get_vectors("vgg16", "v1", ["img29", "nope", "img0"]) == [
        vectors["img29"],
        None,
        vectors["img0"],
    ]
    assert dict(store.scan_vectors("vgg16", "v1")) == vectors
    for shard in range(3):
        in_shard = {i for i in ids if shard_of(i, 3) == shard}
        assert {i for i, _ in store.scan_vectors("vgg16", "v1", shard)} == in_shard
        key = keys.index_vectors("vgg16", "v1", shard, 3)
        assert redis_client.hlen(key) == len(in_shard) > 0
    # Each shard is an index of its own in the registry, so deletes need nothing new.
    assert redis_client.scard(keys.INDEX_REGISTRY) == 3
    assert redis_client.exists(keys.index_vectors("vgg16", "v1")) == 0  # no unsharded keys

    assert catalogue.delete("img7")
    assert store.size("vgg16", "v1") == 29
    assert store.missing("vgg16", "v1", ["img7", "img8"]) == ["img7"]


def test_a_replica_of_a_shard_follows_that_shard_alone(redis_client):
    store = IndexStore(redis_client, shards=2)
    ids = [f"img{n}" for n in range(12)]
    catalogue = add_catalogue_entries(redis_client, ids)
    replicas = [IndexReplica(store, "vgg16", "v1", 2, "euclidean", shard=k) for k in (0, 1)]
    store.add_vectors(
        "vgg16", "v1", {i: vector_to_bytes(np.array([n, 0])) for n, i in enumerate(ids)}
    )
    for replica in replicas:
        replica.sync()
        assert {h.id for h in replica.search(np.zeros(2), 20)} == {
            i for i in ids if shard_of(i, 2) == replica.shard
        }
    gone = ids[3]
    catalogue.delete(gone)
    owner = replicas[shard_of(gone, 2)]
    assert gone not in {h.id for h in owner.search(np.zeros(2), 20)}  # read-your-writes
    assert sum(len(r.index) for r in replicas) == 11


def sharded_like(ids, vectors, metric, shards) -> tuple[VectorIndex, list[VectorIndex]]:
    """One index of every vector, and one per shard holding that shard's vectors."""
    whole = VectorIndex(vectors.shape[1], metric)
    whole.upsert(ids, vectors)
    parts = [VectorIndex(vectors.shape[1], metric) for _ in range(shards)]
    for image_id, vector in zip(ids, vectors, strict=True):
        parts[shard_of(image_id, shards)].upsert([image_id], vector[None])
    return whole, parts


def merged_search(parts, query, k, metric):
    ranked = [part.search(query, k) for part in parts]
    return merge_top_k(ranked, k, metric == "cosine", lambda h: h.score, lambda h: h.id)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("shards", [2, 3, 5])
def test_the_merge_of_each_shards_top_k_is_the_exact_top_k(metric, shards):
    rng = np.random.default_rng(shards)
    vectors = unit_rows(rng, 400, 32)
    if metric == "euclidean":
        vectors *= rng.uniform(0.5, 2, size=(400, 1)).astype(np.float32)
    ids = [f"img{n:03d}" for n in range(400)]
    whole, parts = sharded_like(ids, vectors, metric, shards)
    for query in [*vectors[:5], *unit_rows(rng, 5, 32)]:
        for k in (1, 10, 50, 400):
            truth, merged = whole.search(query, k), merged_search(parts, query, k, metric)
            assert [h.id for h in merged] == [h.id for h in truth]
            assert np.allclose([h.score for h in merged], [h.score for h in truth], atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_tied_scores_come_in_the_order_of_one_index(metric):
    """Small whole numbers make every score exact in float32, so equal vectors have equal
    scores whatever their row (float rounding would otherwise differ by row position in
    the matrix product, and with it the order of vectors that only rounding tells apart)."""
    rng = np.random.default_rng(7)
    vectors = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)  # many equal vectors
    ids = [f"img{n:03d}" for n in range(300)]
    whole, parts = sharded_like(ids, vectors, metric, 3)
    for query in vectors[:10]:
        for k in (1, 7, 40):
            truth, merged = whole.search(query, k), merged_search(parts, query, k, metric)
            assert [(h.id, h.score) for h in merged] == [(h.id, h.score) for h in truth]
            assert len({h.score for h in truth}) < k or k == 1  # ties inside the top k


def test_tied_scores_are_ordered_by_id_whatever_the_shard():
    hits = [[{"id": "b", "score": 0.5}, {"id": "d", "score": 0.1}], [{"id": "a", "score": 0.5}]]
    ranked = merge_top_k(hits, 3, True, lambda h: h["score"], lambda h: h["id"])
    assert [h["id"] for h in ranked] == ["a", "b", "d"]
    ranked = merge_top_k(hits, 2, False, lambda h: h["score"], lambda h: h["id"])
    assert [h["id"] for h in ranked] == ["d", "a"]


def test_shards_setting_is_a_comma_list_within_index_shards(monkeypatch):
    monkeypatch.setenv("INDEX_SHARDS", "4")
    monkeypatch.setenv("SHARDS", "3, 1")
    settings = WorkerSettings()
    assert settings.shards == (3, 1) and settings.served_shards == [1, 3]
    monkeypatch.setenv("SHARDS", "")
    assert WorkerSettings().served_shards == [0, 1, 2, 3]
    for bad, says in [("4", "INDEX_SHARDS=4 has shards 0 to 3"), ("1,x", "comma-separated")]:
        monkeypatch.setenv("SHARDS", bad)
        with pytest.raises(pydantic.ValidationError, match=says):
            WorkerSettings()
    monkeypatch.delenv("INDEX_SHARDS")
    monkeypatch.setenv("SHARDS", "1")
    with pytest.raises(pydantic.ValidationError, match="INDEX_SHARDS=1 has shards 0 to 0"):
        WorkerSettings()


# The gateway's merge of the shards other workers searched (Flask app, Celery's result
# backend on a real Redis; the results are stored as the workers store them).
def search_job(app, shard_results: dict[int, tuple[str, dict | Exception]], deadline: float):
    from celery import states

    from shared.contracts import SearchResult, ShardSearchResult
    from shared.jobs import JobRecord, shard_task_id, task_id

    job = JobRecord(
        id=f"job-{time.monotonic_ns()}",
        kind="search",
        methods=["vgg16"],
        params={"k": 3},
        deadline=deadline,
    )
    backend = app.extensions["celery"].backend
    local = SearchResult(
        method="vgg16",
        worker="w0",
        model_version="v1",
        metric="cosine",
        higher_is_better=True,
        index_size=3,
        index_kind="exact",
        results=[{"id": "a", "score": 0.9, "rank": 1}, {"id": "c", "score": 0.5, "rank": 2}],
        shards=[
            {"shard": 0, "worker": "w0", "index_size": 3, "index_kind": "exact", "search_ms": 1}
        ],
        shard_fan_out={
            "k": 3,
            "index_shards": 2,
            "tasks": [{"shard": 1, "task_id": shard_task_id(job.id, "vgg16", 1)}],
        },
    )
    backend.store_result(task_id(job.id, "vgg16"), local.to_json(), states.SUCCESS)
    for shard, (state, result) in shard_results.items():
        if isinstance(result, dict):
            result = ShardSearchResult(**result).to_json()
        backend.store_result(shard_task_id(job.id, "vgg16", shard), result, state)
    return job


@pytest.fixture(scope="module")
def sharded_gateway(redis_url):
    from services.gateway.app import create_app
    from services.gateway.settings import GatewaySettings
    from tests.conftest import fresh_database

    app = create_app(GatewaySettings(redis_url=fresh_database(redis_url), index_shards=2))
    add_catalogue_entries(app.extensions["redis"], ["a", "b", "c", "d"])
    yield app
    app.extensions["redis"].flushdb()


def shard_one(results: list[dict]) -> dict:
    return {
        "method": "vgg16",
        "shard": 1,
        "worker": "w1",
        "model_version": "v1",
        "index_size": 2,
        "index_kind": "exact",
        "results": results,
        "search_ms": 2.0,
    }


def test_the_gateway_merges_the_other_shards_top_k(sharded_gateway):
    from celery import states

    from services.gateway import jobs

    hits = [{"id": "b", "score": 0.7000001, "rank": 1}, {"id": "d", "score": 0.5, "rank": 2}]
    job = search_job(sharded_gateway, {1: (states.SUCCESS, shard_one(hits))}, time.time() + 60)
    with sharded_gateway.test_request_context():
        view = jobs.job_view(job)
    vgg16 = view["methods"]["vgg16"]
    assert view["status"] == "done" and vgg16["status"] == "done"
    assert [(r["id"], r["score"]) for r in vgg16["results"]] == [
        ("a", 0.9),
        ("b", 0.7),
        ("c", 0.5),  # ties by id: c before d
    ]
    assert vgg16["index_size"] == vgg16["total"] == 5
    assert [s["worker"] for s in vgg16["shards"]] == ["w0", "w1"]
    assert "shard_fan_out" not in vgg16


def test_a_shard_still_searching_keeps_the_method_running(sharded_gateway):
    from services.gateway import jobs

    job = search_job(sharded_gateway, {}, time.time() + 60)
    with sharded_gateway.test_request_context():
        view = jobs.job_view(job)
    assert view["status"] == "running" and view["methods"]["vgg16"] == {"status": "running"}


def test_a_shard_without_a_worker_ends_at_the_deadline_naming_the_shard(sharded_gateway):
    from services.gateway import jobs

    # The embedding worker answered in time (its result is stored now), its shard never did.
    job = search_job(sharded_gateway, {}, time.time() + 0.5)
    time.sleep(0.6)
    with sharded_gateway.test_request_context():
        view = jobs.job_view(job)
    assert view["status"] == "failed" and view["reason"] == "timeout"
    assert view["message"].startswith("index shard 1 of 2 (queue vgg16.search.shard-1): ")
    assert view["methods"]["vgg16"]["reason"] == "timeout"


def test_a_failed_shard_fails_the_method_naming_the_shard(sharded_gateway):
    from celery import states

    from services.gateway import jobs

    error = LookupError("no model 'v1'")
    job = search_job(sharded_gateway, {1: (states.FAILURE, error)}, time.time() + 60)
    with sharded_gateway.test_request_context():
        view = jobs.job_view(job)
    vgg16 = view["methods"]["vgg16"]
    assert vgg16["status"] == "failed"
    assert vgg16["error"].startswith("index shard 1 of 2 (queue vgg16.search.shard-1) failed")
