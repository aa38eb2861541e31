"""The key layout on a Redis Cluster: what changes together shares a slot, the rest spreads.

Slots are computed as Redis computes them (CRC16 of the hash tag), so these tests need no
cluster; tests/integration/test_redis_cluster.py runs the stores on a real one.
"""

import pytest
from redis.cluster import key_slot

from shared import keys
from shared.settings import CommonSettings


@pytest.fixture
def cluster_layout():
    keys.use_cluster_layout()
    yield
    keys.use_cluster_layout(False)


def slots(*names: str) -> set[int]:
    return {key_slot(name.encode()) for name in names}


def test_one_redis_keeps_the_stored_key_names():
    assert keys.catalogue_ids() == keys.CATALOGUE_IDS == "catalog:ids"
    assert keys.blob_references("ab" * 32) == keys.BLOB_REFERENCES == "blob:refs"
    assert keys.catalogue_partitions() == 1
    assert keys.catalogue_meta("a") == "catalog:meta:a"
    assert keys.index_vectors("vgg16", "v1") == "index:vgg16:v1:vectors"
    assert keys.index_vectors("vgg16", "v1", 2, 4) == "index:vgg16:v1:shard-2-of-4:vectors"
    assert keys.job("j1") == "job:j1"
    assert keys.model_blob("autoencoder", "v2") == "model:autoencoder:v2"


def test_an_entry_its_id_list_and_its_postings_share_its_partitions_slot(cluster_layout):
    image_id = "any id {with} braces"
    partition = keys.catalogue_partition(image_id)
    assert (
        len(
            slots(
                keys.catalogue_meta(image_id),
                keys.catalogue_ids(partition),
                keys.catalogue_posting('"label"', '"Lemon"', partition),
                keys.catalogue_postings_of(image_id),
                keys.catalogue_postings_ready(partition),
                keys.catalogue_image(image_id),
            )
        )
        == 1
    )


def test_the_catalogue_partitions_and_the_blobs_spread(cluster_layout):
    partitions = keys.catalogue_partitions()
    assert len(slots(*(keys.catalogue_ids(p) for p in range(partitions)))) == partitions
    ids = [f"image-{n}" for n in range(20_000)]
    counts = [0] * partitions
    for image_id in ids:
        counts[keys.catalogue_partition(image_id)] += 1
    assert min(counts) > 0.8 * len(ids) / partitions  # a hash, not a few partitions
    # A blob's references and deletion mark share a slot; blobs spread.
    name = "ab" * 32
    assert len(slots(keys.blob_references(name), keys.blob_deleting(name))) == 1
    assert slots(keys.blob_references(name)) != slots(keys.blob_references("cd" * 32))


def test_a_shards_keys_share_a_slot_and_the_shards_spread(cluster_layout):
    per_shard = [
        slots(
            keys.index_vectors("vgg16", "v1", shard, 8),
            keys.index_log("vgg16", "v1", shard, 8),
            keys.index_floor("vgg16", "v1", shard, 8),
            keys.index_epoch("vgg16", "v1", shard, 8),
            keys.index_prefix("vgg16", "v1", shard, 8) + ":vectors",  # as the scripts spell it
        )
        for shard in range(8)
    ]
    assert all(len(each) == 1 for each in per_shard)
    assert len(set().union(*per_shard)) == 8


def test_a_methods_versions_and_models_share_a_slot_and_a_jobs_keys_another(cluster_layout):
    # ModelStore.save marks a version as building in the transaction that stores it.
    method = slots(
        keys.active_version("autoencoder"),
        keys.building_versions("autoencoder"),
        keys.retained_versions("autoencoder"),
        keys.model_blob("autoencoder", "v2"),
        keys.model_meta("autoencoder", "v2"),
        keys.model_artifact("autoencoder", "v2", "preview"),
        keys.model_versions("autoencoder"),
        keys.retrain_started_at_size("autoencoder"),
    )
    assert len(method) == 1
    job = slots(
        keys.job("j1"),
        keys.job_view("j1"),
        keys.query_image("j1"),
        keys.query_vector("j1", "vgg16"),
        keys.staged_images("j1"),
    )
    assert len(job) == 1
    assert job != slots(keys.job("j2"))


def test_cluster_nodes_are_read_as_host_port_pairs(monkeypatch):
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "10.0.0.5:7000, redis-b:7001")
    assert CommonSettings().redis_cluster_nodes == ("10.0.0.5:7000", "redis-b:7001")
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "10.0.0.5")
    with pytest.raises(ValueError, match="host:port"):
        CommonSettings()
