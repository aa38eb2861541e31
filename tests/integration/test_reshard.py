"""Re-sharding on a real Redis: every vector copied unchanged, searches alike, writes kept."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import redis

from deploy.launcher import Processes, wait_until
from shared import keys
from shared.catalogue import Catalogue, ImageMeta
from shared.index_store import IndexStore
from shared.runtime.vector_index import IndexReplica, vector_to_bytes
from shared.shards import merge_top_k, shard_of
from tests.conftest import ROOT, SAMPLES, fresh_database
from tests.integration.conftest import Service, base_env, stopping
from tests.integration.system import start_sharded_vgg16, start_system
from tools import reshard

pytestmark = pytest.mark.integration

VGG16 = "vgg16-imagenet-pool512"

DIM = 16
INDEXES = [("vgg16", "vgg16-test", "cosine"), ("autoencoder", "ae-1", "euclidean"),
           ("autoencoder", "ae-0", "euclidean")]  # fmt: skip


def add_entries(client: redis.Redis, ids: list[str], content: str = "a") -> None:
    """Catalogue entries (metadata only: the write script checks they exist)."""
    pipe = client.pipeline(transaction=False)
    for n, image_id in enumerate(ids):
        meta = ImageMeta(image_id, f"{content}-{image_id}", 8, 8, None, "png", 1.8e9 + n)
        pipe.set(keys.catalogue_meta(image_id), meta.portable_json())
        pipe.zadd(keys.CATALOGUE_IDS, {image_id: meta.added_at})
    pipe.execute()


def fill(client: redis.Redis, shards: int, ids: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    store = IndexStore(client, shards=shards)
    for method, version, _ in INDEXES:
        rows = rng.standard_normal((len(ids), DIM)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        store.add_vectors(
            method, version, {i: vector_to_bytes(r) for i, r in zip(ids, rows, strict=True)}
        )


def whole(client: redis.Redis, shards: int, method: str, version: str) -> dict[str, bytes]:
    return dict(IndexStore(client, shards=shards).scan_vectors(method, version))


def sharded_search(client, shards, method, version, metric, query):
    store = IndexStore(client, shards=shards)
    lists = [
        IndexReplica(store, method, version, DIM, metric, shard=shard).search(query, 10)
        for shard in range(shards)
    ]
    merged = merge_top_k(lists, 10, metric == "cosine", lambda h: h.score, lambda h: h.id)
    return [(hit.id, round(hit.score, 5)) for hit in merged]


def test_resharding_copies_every_vector_unchanged_and_searches_agree(redis_client):
    ids = [f"img-{n:04d}" for n in range(600)]
    add_entries(redis_client, ids)
    fill(redis_client, 2, ids)
    queries = np.random.default_rng(9).standard_normal((5, DIM)).astype(np.float32)
    before = {
        (m, v): [sharded_search(redis_client, 2, m, v, metric, q) for q in queries]
        for m, v, metric in INDEXES
    }

    copied = reshard.reshard(redis_client, 2, 4)

    assert sorted((c.method, c.version) for c in copied) == sorted((m, v) for m, v, _ in INDEXES)
    for c in copied:
        assert (c.source_size, c.target_size, c.missing, c.notes) == (600, 600, 0, [])
    for method, version, metric in INDEXES:
        assert whole(redis_client, 4, method, version) == whole(redis_client, 2, method, version)
        for shard in range(4):  # S to 2S: shard k of 2 splits into k and k + 2 of 4
            held = whole_shard(redis_client, 4, method, version, shard)
            assert held and all(shard_of(i, 4) == shard for i in held)
            assert all(shard_of(i, 2) == shard % 2 for i in held)
        after = [sharded_search(redis_client, 4, method, version, metric, q) for q in queries]
        assert after == before[(method, version)]
        # The old layout is left as it was: searches still reading it see no change.
        assert [sharded_search(redis_client, 2, method, version, metric, q) for q in queries] == (
            before[(method, version)]
        )


def whole_shard(client, shards, method, version, shard) -> dict[str, bytes]:
    return dict(IndexStore(client, shards=shards).scan_vectors(method, version, shard=shard))


def test_writes_made_during_the_copy_reach_the_new_layout(redis_client, blobs, monkeypatch):
    """Adds, deletes and replaced vectors made after the bulk copy of a shard read it are
    replayed from its log; a vector of a picture replaced meanwhile is never copied."""
    ids = [f"img-{n:04d}" for n in range(400)]
    add_entries(redis_client, ids)
    fill(redis_client, 1, ids)
    catalogue = Catalogue(redis_client, blobs)
    old_store = IndexStore(redis_client, shards=1)
    new_ids = [f"new-{n:03d}" for n in range(50)]
    copy_shard = reshard._copy_shard

    def copy_then_change(source, target, method, version, shard):
        written = copy_shard(source, target, method, version, shard)
        if method == "vgg16":  # once, while the service goes on writing to the old layout
            add_entries(redis_client, new_ids)
            old_store.add_vectors(
                method, version, {i: vector_to_bytes(np.ones(DIM)) for i in new_ids}
            )
            for image_id in ids[:30]:
                catalogue.delete(image_id)
            old_store.add_vectors(  # re-embedded by another model build: new bytes, same id
                method, version, {i: vector_to_bytes(np.full(DIM, 0.5)) for i in ids[30:40]}
            )
        return written

    monkeypatch.setattr(reshard, "_copy_shard", copy_then_change)
    copied = {(c.method, c.version): c for c in reshard.reshard(redis_client, 1, 3)}

    vgg16 = copied[("vgg16", "vgg16-test")]
    assert vgg16.replayed > 0 and vgg16.missing == 0
    for method, version, _ in INDEXES:
        old, new = whole(redis_client, 1, method, version), whole(redis_client, 3, method, version)
        assert new == old
        assert not set(ids[:30]) & set(new)
    assert len(whole(redis_client, 3, "vgg16", "vgg16-test")) == 400 - 30 + 50


def test_a_vector_of_a_picture_replaced_during_the_copy_is_refused(redis_client):
    add_entries(redis_client, ["shoe"])
    IndexStore(redis_client).add_vectors("vgg16", "v", {"shoe": vector_to_bytes(np.ones(DIM))})
    source, target = IndexStore(redis_client), IndexStore(redis_client, shards=2)
    mget = redis_client.mget

    def replaced_after_reading_its_hash(names):
        found = mget(names)
        add_entries(redis_client, ["shoe"], content="b")  # the upload of another picture
        return found

    redis_client.mget = replaced_after_reading_its_hash
    try:
        assert reshard._copy_current(source, target, "vgg16", "v", ["shoe"]) == 0
    finally:
        redis_client.mget = mget
    assert target.missing("vgg16", "v", ["shoe"]) == ["shoe"]


def test_the_command_copies_then_drops_the_old_layout(redis_url):
    url = fresh_database(redis_url)
    client = redis.Redis.from_url(url)
    ids = [f"img-{n:03d}" for n in range(120)]
    add_entries(client, ids)
    fill(client, 2, ids)
    env = dict(os.environ, REDIS_URL=url, INDEX_SHARDS="2", PYTHONPATH=str(ROOT))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tools.reshard", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    first = run("--to", "4")
    assert first.returncode == 0, first.stderr
    assert "vgg16 vgg16-test: 120 vectors in 2 shards, 120 in 4 (120 written" in first.stdout
    again = run("--to", "4", "--drop-source")  # after the restart: nothing left to copy
    assert again.returncode == 0, again.stderr
    assert (
        "(0 written" in again.stdout and "dropped the 2-shard layout of 3 indexes" in again.stdout
    )
    registry = {p.decode() for p in client.smembers(keys.INDEX_REGISTRY)}
    assert registry and all(p.endswith("-of-4") for p in registry)
    assert not list(client.scan_iter(match="index:*-of-2:*"))
    assert len(whole(client, 4, "vgg16", "vgg16-test")) == 120
    assert run("--to", "4").stdout.startswith("no index has 2 shards here")
    refused = run("--to", "2")
    assert refused.returncode == 2 and "already have 2 shards" in refused.stderr


def test_a_running_service_is_resharded_while_it_answers_searches(redis_url, tmp_path):
    """2 shards to 4 under a real gateway and Celery workers: searches go on answering as
    before while the command copies; restarted with INDEX_SHARDS=4 (two search workers of
    two shards each, no index worker: nothing can be embedded again) the service gives the
    same answers, before and after the old layout is dropped."""
    photos = sorted(SAMPLES.rglob("*.jpg"))
    catalogue, queries = photos[:24], [photos[0], photos[13], photos[30]]
    env = base_env(fresh_database(redis_url), INDEX_SHARDS="2")
    client = redis.Redis.from_url(env["REDIS_URL"])

    def answers(service: Service) -> list[list[tuple[str, float]]]:
        found = []
        for path in queries:
            outcome = service.search_and_wait(path, k=10, methods="vgg16")["methods"]["vgg16"]
            assert outcome["status"] == "done", outcome
            found.append([(r["id"], r["score"]) for r in outcome["results"]])
        return found

    def same(found: list, expected: list) -> bool:
        """Same ids in the same order, scores alike (another worker process embeds the
        query: in bfloat16 its vector may differ in the last bits)."""
        return all(
            [i for i, _ in mine] == [i for i, _ in theirs]
            and np.allclose([s for _, s in mine], [s for _, s in theirs], atol=2e-3)
            for mine, theirs in zip(found, expected, strict=True)
        )

    procs = Processes()
    with stopping(tmp_path, procs):
        service = start_system(procs, env, tmp_path, workers=[("vgg16", ["search", "index"])])
        service.add_images(catalogue)
        wait_until(lambda: IndexStore(client, 2).size("vgg16", VGG16) == 24, 300, "indexing")
        before = answers(service)
        copy_done, during = threading.Event(), []

        def search_until_copied() -> None:
            while not copy_done.is_set() or not during:
                during.append(answers(service))

        searching = threading.Thread(target=search_until_copied)
        searching.start()
        try:
            copied = reshard_command(env, "--to", "4")
        finally:
            copy_done.set()
            searching.join(120)
        assert copied.returncode == 0, copied.stderr
        assert "24 vectors in 2 shards, 24 in 4 (24 written" in copied.stdout, copied.stdout
        assert during and all(same(found, before) for found in during)

    procs = Processes()
    with stopping(tmp_path, procs):
        resharded = {**env, "INDEX_SHARDS": "4"}
        workers = [
            (f"vgg16-shards-{shards.replace(',', '-')}", ["search"], {"SHARDS": shards})
            for shards in ("0,1", "2,3")
        ]
        service = start_sharded_vgg16(procs, resharded, tmp_path, workers)
        assert same(answers(service), before)
        dropped = reshard_command(env, "--to", "4", "--drop-source")
        assert dropped.returncode == 0 and "(0 written" in dropped.stdout, dropped.stdout
        assert not list(client.scan_iter(match="index:*-of-2:*"))
        assert same(answers(service), before)


def reshard_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.reshard", *args],
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
