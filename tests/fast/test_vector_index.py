"""Exact vector search against a brute-force reference, and replica sync through real Redis."""

import numpy as np
import pytest

from shared.blobs import open_blob_store
from shared.catalogue import Catalogue
from shared.images import canonicalize
from shared.index_store import IndexStore
from shared.runtime.vector_index import (
    GraphIndex,
    IndexReplica,
    VectorIndex,
    candidate_count,
    decode_vector,
    vector_from_bytes,
    vector_to_bytes,
)
from shared.settings import CommonSettings


def unit_rows(rng, n, dim):
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_search_matches_brute_force(metric):
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng, 500, 16) * rng.uniform(0.5, 2, size=(500, 1)).astype(np.float32)
    ids = [f"img{i}" for i in range(500)]
    index = VectorIndex(16, metric, capacity=8)  # small capacity: exercises growth
    index.upsert(ids, vectors)
    query = rng.normal(size=16).astype(np.float32)
    hits = index.search(query, 10)
    if metric == "cosine":
        expected = np.argsort(-(vectors @ query))[:10]
    else:
        expected = np.argsort(np.linalg.norm(vectors - query, axis=1))[:10]
    assert [h.id for h in hits] == [ids[i] for i in expected]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=(metric == "cosine"))


def test_upsert_replaces_and_remove_keeps_rows_consistent():
    index = VectorIndex(2, "euclidean")
    index.upsert(["a", "b", "c"], np.array([[0, 0], [5, 5], [9, 9]], np.float32))
    index.upsert(["a"], np.array([[20, 20]], np.float32))
    index.remove(["b", "missing"])
    assert len(index) == 2 and "b" not in index
    hits = index.search(np.array([0, 0], np.float32), 5)
    assert [h.id for h in hits] == ["c", "a"]
    assert hits[0].score == pytest.approx(np.hypot(9, 9))


def test_empty_index_and_k_larger_than_index():
    index = VectorIndex(3, "cosine")
    assert index.search(np.ones(3, np.float32), 5) == []
    index.upsert(["only"], np.array([[1, 0, 0]], np.float32))
    assert [h.id for h in index.search(np.ones(3, np.float32), 5)] == ["only"]


def test_vectors_are_stored_as_float16_in_half_the_bytes():
    vector = unit_rows(np.random.default_rng(1), 1, 512)[0]
    stored = vector_to_bytes(vector)
    assert len(stored) == 512 * 2 + 1  # float16 values and the tag byte
    restored = vector_from_bytes(stored, 512)
    assert restored.dtype == np.float32
    # float16 keeps 11 significant bits: each value within half a unit in the last place.
    assert np.allclose(restored, vector, rtol=2**-11, atol=2**-24)
    assert vector_to_bytes(restored) == stored  # storing a stored vector again changes nothing


def test_vectors_stored_as_float32_by_an_earlier_release_are_still_read():
    vector = unit_rows(np.random.default_rng(2), 1, 128)[0]
    earlier = vector.astype("<f4").tobytes()
    assert np.array_equal(vector_from_bytes(earlier, 128), vector)
    # A float32 vector of 128 values and a float16 one of 256 both hold 512 bytes of
    # values; the tag tells them apart without knowing the dimension.
    assert decode_vector(earlier).size == 128
    assert decode_vector(vector_to_bytes(np.zeros(256))).size == 256
    with pytest.raises(ValueError, match="model makes 64"):
        vector_from_bytes(earlier, 64)
    with pytest.raises(ValueError, match="not a stored vector"):
        decode_vector(b"\x00" * 7)


def test_a_vector_float16_cannot_hold_is_refused_not_stored_as_infinity():
    with pytest.raises(ValueError, match="float16 cannot store"):
        vector_to_bytes(np.array([1.0, 70_000.0]))
    with pytest.raises(ValueError, match="float16 cannot store"):
        vector_to_bytes(np.array([np.nan, 0.0]))


def test_a_replica_serves_an_index_of_float32_and_float16_vectors(redis_client):
    """An index filled before the upgrade and added to after it holds both encodings."""
    store = IndexStore(redis_client)
    add_catalogue_entries(redis_client, ["old", "new"])
    replica = IndexReplica(store, "vgg16", "v1", 2, "cosine")
    store.add_vectors("vgg16", "v1", {"old": np.array([1, 0], "<f4").tobytes()})
    store.add_vectors("vgg16", "v1", {"new": vector_to_bytes(np.array([0.6, 0.8]))})
    hits = replica.search(np.array([0, 1], np.float32), 5)
    assert [h.id for h in hits] == ["new", "old"]
    assert hits[0].score == pytest.approx(0.8, abs=1e-3)


def add_catalogue_entries(client, ids, colour_offset=0):
    catalogue = Catalogue(client, open_blob_store(CommonSettings()))
    import io

    from PIL import Image

    for n, image_id in enumerate(ids):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), ((n + colour_offset) % 256, 0, 0)).save(buffer, "PNG")
        image = canonicalize(buffer.getvalue(), max_side=64, max_pixels=10_000)
        catalogue.put(image_id, image, filename=None, metadata={})
    return catalogue


def test_replicas_see_each_others_adds_and_deletes(redis_client):
    store = IndexStore(redis_client)
    catalogue = add_catalogue_entries(redis_client, ["a", "b", "c"])
    first = IndexReplica(store, "vgg16", "v1", 2, "cosine")
    second = IndexReplica(store, "vgg16", "v1", 2, "cosine")
    store.add_vectors("vgg16", "v1", {"a": vector_to_bytes(np.array([1, 0]))})
    assert [h.id for h in first.search(np.array([1, 0], np.float32), 5)] == ["a"]
    store.add_vectors("vgg16", "v1", {"b": vector_to_bytes(np.array([0, 1]))})
    catalogue.delete("a")
    assert [h.id for h in first.search(np.array([1, 0], np.float32), 5)] == ["b"]
    assert [h.id for h in second.search(np.array([1, 0], np.float32), 5)] == ["b"]


def test_vectors_of_deleted_images_are_never_stored(redis_client):
    store = IndexStore(redis_client)
    catalogue = add_catalogue_entries(redis_client, ["kept", "gone"])
    catalogue.delete("gone")  # deleted while its embedding was being computed
    stored = store.add_vectors(
        "vgg16", "v1", {"kept": vector_to_bytes(np.ones(2)), "gone": vector_to_bytes(np.ones(2))}
    )
    assert stored == 1
    assert store.missing("vgg16", "v1", ["kept", "gone"]) == ["gone"]


def test_a_vector_of_a_replaced_picture_is_never_stored(redis_client):
    store = IndexStore(redis_client)
    catalogue = add_catalogue_entries(redis_client, ["swap", "same"])
    (_, old_hash), (_, same_hash) = catalogue.get_images_and_hashes(["swap", "same"])
    add_catalogue_entries(redis_client, ["swap"], colour_offset=99)  # new picture, same id
    stored = store.add_vectors(
        "vgg16",
        "v1",
        {"swap": vector_to_bytes(np.ones(2)), "same": vector_to_bytes(np.ones(2))},
        made_from={"swap": old_hash, "same": same_hash},
    )
    assert stored == 1
    assert store.missing("vgg16", "v1", ["swap", "same"]) == ["swap"]


def test_an_upload_drops_vectors_of_an_entry_it_did_not_see(redis_client, monkeypatch):
    store = IndexStore(redis_client)
    add_catalogue_entries(redis_client, ["x"])
    store.add_vectors("vgg16", "v1", {"x": vector_to_bytes(np.ones(2))})
    # Two uploads of one id at the same moment: the second looked before the first wrote.
    monkeypatch.setattr(Catalogue, "get_meta", lambda self, image_id: None)
    add_catalogue_entries(redis_client, ["x"], colour_offset=5)
    assert store.size("vgg16", "v1") == 0


def test_delete_reaches_every_method_and_version(redis_client):
    store = IndexStore(redis_client)
    catalogue = add_catalogue_entries(redis_client, ["x"])
    for method, version in [("vgg16", "v1"), ("autoencoder", "ae1"), ("autoencoder", "ae2")]:
        store.add_vectors(method, version, {"x": vector_to_bytes(np.ones(4))})
    assert catalogue.delete("x")
    for method, version in [("vgg16", "v1"), ("autoencoder", "ae1"), ("autoencoder", "ae2")]:
        assert store.size(method, version) == 0
    assert not catalogue.delete("x")


def test_replica_reloads_when_the_log_was_trimmed_past_it(redis_client, monkeypatch):
    import shared.index_store as index_store

    monkeypatch.setattr(index_store, "LOG_MAX_ENTRIES", 5)
    monkeypatch.setattr(index_store, "_LOG_TRIM_SLACK", 0)
    store = IndexStore(redis_client)
    ids = [f"i{n}" for n in range(30)]
    add_catalogue_entries(redis_client, ids)
    replica = IndexReplica(store, "vgg16", "v1", 2, "euclidean")
    store.add_vectors("vgg16", "v1", {"i0": vector_to_bytes(np.zeros(2))})
    replica.sync()
    for n in range(1, 30):
        store.add_vectors("vgg16", "v1", {f"i{n}": vector_to_bytes(np.array([n, 0]))})
    assert redis_client.xlen("index:vgg16:v1:log") == 5
    replica.sync()
    assert len(replica.index) == 30
    assert replica.search(np.array([29, 0], np.float32), 1)[0].id == "i29"


def test_a_replica_reloads_when_redis_lost_its_data(redis_client):
    """FLUSHDB is what a Redis restarted without its files looks like to the workers."""
    store = IndexStore(redis_client)
    old = [f"old{n}" for n in range(8)]
    add_catalogue_entries(redis_client, old)
    for n, image_id in enumerate(old):
        store.add_vectors("vgg16", "v1", {image_id: vector_to_bytes(np.array([n, 1]))})
    replica = IndexReplica(store, "vgg16", "v1", 2, "euclidean")
    assert len(replica.search(np.zeros(2, np.float32), 10)) == 8

    redis_client.flushdb()
    assert replica.search(np.zeros(2, np.float32), 10) == []  # nothing written since: empty

    add_catalogue_entries(redis_client, ["new0", "new1", "new2"])
    for n in range(3):
        store.add_vectors("vgg16", "v1", {f"new{n}": vector_to_bytes(np.array([n, 5]))})
    hits = replica.search(np.zeros(2, np.float32), 10)
    assert sorted(h.id for h in hits) == ["new0", "new1", "new2"]
    assert len(replica.index) == store.size("vgg16", "v1") == 3


def test_a_replica_reloads_when_redis_went_back_to_an_older_copy(redis_client):
    """Redis restarted from an older snapshot: same epoch, but the log ends before the
    replica's position, and vectors added after the snapshot must leave the replica."""
    store = IndexStore(redis_client)
    add_catalogue_entries(redis_client, ["kept", "lost"])
    store.add_vectors("vgg16", "v1", {"kept": vector_to_bytes(np.array([1, 0]))})
    index_keys = [f"index:vgg16:v1:{part}" for part in ("vectors", "log", "epoch")]
    older = {key: redis_client.dump(key) for key in index_keys}
    store.add_vectors("vgg16", "v1", {"lost": vector_to_bytes(np.array([0, 1]))})
    replica = IndexReplica(store, "vgg16", "v1", 2, "cosine")
    assert len(replica.search(np.array([1, 0], np.float32), 5)) == 2

    for key, dumped in older.items():
        redis_client.restore(key, 0, dumped, replace=True)
    assert [h.id for h in replica.search(np.array([1, 0], np.float32), 5)] == ["kept"]


def test_a_replica_loaded_before_the_first_vector_follows_the_new_index(redis_client):
    store = IndexStore(redis_client)
    add_catalogue_entries(redis_client, ["first", "second"])
    replica = IndexReplica(store, "vgg16", "v1", 2, "cosine")
    assert replica.search(np.array([1, 0], np.float32), 5) == []
    store.add_vectors("vgg16", "v1", {"first": vector_to_bytes(np.array([1, 0]))})
    store.add_vectors("vgg16", "v1", {"second": vector_to_bytes(np.array([0, 1]))})
    assert [h.id for h in replica.search(np.array([1, 0], np.float32), 5)] == ["first", "second"]


def clustered_rows(rng, n, dim, clusters=40):
    """Unit vectors around a few centres: nearer to real embeddings than uniform noise."""
    centres = rng.normal(size=(clusters, dim))
    rows = centres[rng.integers(0, clusters, n)] + 0.8 * rng.normal(size=(n, dim))
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_graph_candidates_reranked_exactly_match_exact_search(metric):
    rng = np.random.default_rng(3)
    vectors = clustered_rows(rng, 4000, 64)
    ids = [f"img{i}" for i in range(len(vectors))]
    exact = VectorIndex(64, metric)
    exact.upsert(ids, vectors)
    graph = GraphIndex(64, metric)
    graph.upsert(ids, vectors, threads=2)
    recalls = []
    for query in clustered_rows(rng, 50, 64):
        truth = exact.search(query, 10)
        found = exact.search_among(query, graph.candidates(query, candidate_count(10)), 10)
        recalls.append(len({h.id for h in truth} & {h.id for h in found}) / 10)
        # Scores of what both found are the exact ones, not the graph's approximations.
        by_id = {h.id: h.score for h in truth}
        assert all(h.score == pytest.approx(by_id[h.id]) for h in found if h.id in by_id)
    assert np.mean(recalls) >= 0.95


def test_search_among_ignores_unknown_and_repeated_candidates():
    index = VectorIndex(2, "cosine")
    index.upsert(["a", "b"], np.array([[1, 0], [0, 1]], np.float32))
    hits = index.search_among(np.array([1, 0], np.float32), ["b", "gone", "a", "b"], 5)
    assert [h.id for h in hits] == ["a", "b"]


def test_graph_forgets_removed_and_moves_replaced_vectors():
    graph = GraphIndex(2, "euclidean")
    graph.upsert(["a", "b", "c"], np.array([[0, 0], [5, 5], [9, 9]], np.float32))
    graph.remove(["b", "never-there"])
    graph.upsert(["a"], np.array([[9, 8]], np.float32))
    assert len(graph) == 2
    assert set(graph.candidates(np.array([9, 9], np.float32), 5)) == {"a", "c"}


def graph_replica(redis_client, n, threshold):
    rng = np.random.default_rng(5)
    ids = [f"v{i}" for i in range(n)]
    add_catalogue_entries(redis_client, ids + ["late", "later"])
    store = IndexStore(redis_client)
    vectors = clustered_rows(rng, n, 8, clusters=5)
    store.add_vectors(
        "vgg16", "v1", {i: vector_to_bytes(v) for i, v in zip(ids, vectors, strict=True)}
    )
    return store, IndexReplica(store, "vgg16", "v1", 8, "cosine", graph_min_vectors=threshold)


def unit(*values):
    vector = np.array(values, np.float32)
    return vector / np.linalg.norm(vector)


def test_replica_graph_follows_adds_and_deletes(redis_client):
    store, replica = graph_replica(redis_client, 300, threshold=200)
    replica.sync()
    assert replica.wait_for_graph(60) and replica.graph is not None
    assert len(replica.graph) == 300
    far = unit(1, -1, 1, -1, 1, -1, 1, -1)
    store.add_vectors("vgg16", "v1", {"late": vector_to_bytes(far)})
    assert replica.search(far, 1)[0].id == "late"
    Catalogue(redis_client, open_blob_store(CommonSettings())).delete("late")
    assert "late" not in [h.id for h in replica.search(far, 50)]
    assert len(replica.graph) == len(replica.index) == 300


def test_changes_made_while_the_graph_builds_reach_it(redis_client):
    store, replica = graph_replica(redis_client, 100, threshold=None)
    replica.sync()
    # What sync does once the threshold is passed, with the build held back until the
    # index has changed under it.
    build = replica._graph_build = replica._start_graph_build()
    target = unit(-1, 1, -1, 1, -1, 1, -1, 1)
    store.add_vectors("vgg16", "v1", {"later": vector_to_bytes(target)})
    Catalogue(redis_client, open_blob_store(CommonSettings())).delete("v0")
    replica.sync()
    replica._build_graph(build)
    assert replica.graph is not None and len(replica.graph) == 100
    assert replica.search(target, 1)[0].id == "later"
    assert "v0" not in replica.graph.candidates(target, 200)


def test_below_the_threshold_no_graph_is_built(redis_client):
    _, replica = graph_replica(redis_client, 50, threshold=51)
    replica.search(unit(1, 0, 0, 0, 0, 0, 0, 0), 5)
    assert replica.graph is None and replica.wait_for_graph(0)


def filtered_replica(redis_client, n, graph: bool):
    """A replica of ``n`` clustered vectors; with ``graph``, searched through HNSW."""
    rng = np.random.default_rng(11)
    ids = [f"f{i}" for i in range(n)]
    add_catalogue_entries(redis_client, ids)
    store = IndexStore(redis_client)
    # As the index stores them (float16), so that brute force ranks exactly what it holds.
    vectors = as_stored(clustered_rows(rng, n, 16, clusters=20))
    store.add_vectors(
        "vgg16", "v1", {i: vector_to_bytes(v) for i, v in zip(ids, vectors, strict=True)}
    )
    replica = IndexReplica(
        store, "vgg16", "v1", 16, "cosine", graph_min_vectors=0 if graph else None
    )
    replica.sync()
    if graph:
        assert replica.wait_for_graph(60) and replica.graph is not None
    return replica, ids, vectors


def as_stored(rows: np.ndarray) -> np.ndarray:
    return np.stack([decode_vector(vector_to_bytes(row)) for row in rows])


def brute_force(vectors, ids, query, allowed, k):
    order = np.argsort(-(vectors @ query), kind="stable")
    return [ids[i] for i in order if ids[i] in allowed][:k]


def test_a_filtered_exact_search_returns_the_k_nearest_allowed(redis_client):
    replica, ids, vectors = filtered_replica(redis_client, 400, graph=False)
    allowed = set(ids[::13]) | {"not-indexed"}
    query = vectors[5]
    hits = replica.search(query, 10, allowed)
    assert [h.id for h in hits] == brute_force(vectors, ids, query, allowed, 10)
    assert replica.last_search_kind == "exact"
    assert replica.search(query, 10, set()) == []
    assert replica.search(query, 10, {"not-indexed"}) == []


def test_a_filtered_graph_search_widens_its_candidates(redis_client):
    replica, ids, vectors = filtered_replica(redis_client, 3000, graph=True)
    rng = np.random.default_rng(2)
    allowed = {i for i in ids if rng.random() < 0.5}
    overlaps = []
    for query in vectors[:20]:
        hits = replica.search(query, 10, allowed)
        assert replica.last_search_kind == "hnsw"
        assert len(hits) == 10 and {h.id for h in hits} <= allowed
        truth = brute_force(vectors, ids, query, allowed, 10)
        overlaps.append(len({h.id for h in hits} & set(truth)) / 10)
    assert np.mean(overlaps) >= 0.95


def test_a_filtered_graph_search_falls_back_to_an_exact_scan_of_the_allowed(redis_client):
    """The allowed images are the 1,000 farthest from the query: the graph's candidates,
    widened 3 times, hold none of them, so the allowed ones are scanned exactly."""
    replica, ids, vectors = filtered_replica(redis_client, 3000, graph=True)
    query = vectors[0]
    farthest = np.argsort(vectors @ query)[:1000]
    allowed = {ids[i] for i in farthest}
    hits = replica.search(query, 10, allowed)
    assert replica.last_search_kind == "exact"
    assert [h.id for h in hits] == brute_force(vectors, ids, query, allowed, 10)
    # A filter passing few images: their scan costs less than widening the graph's search.
    few = set(ids[:30])
    assert [h.id for h in replica.search(query, 10, few)] == brute_force(
        vectors, ids, query, few, 10
    )
    assert replica.last_search_kind == "exact"
    # Unfiltered, the same replica still answers through the graph.
    replica.search(query, 10)
    assert replica.last_search_kind == "hnsw"
