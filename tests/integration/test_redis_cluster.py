"""The data plane on a real 3-master Redis Cluster (REDIS_CLUSTER_NODES).

The stores first, against the cluster directly: their scripts and transactions each touch
one slot, an index's shards spread over the masters, and the order that replaces the
single-Redis scripts (store, then check the catalogue; change the catalogue, then forget)
leaves no vector of a deleted or replaced image. Then the whole service on the cluster, with
the Celery broker on its own Redis at REDIS_URL: search, delete, a search worker killed -9,
and a master killed (503, nothing half-written) and started again.
"""

import signal
import time

import pytest
import requests

from deploy.launcher import Processes, start_redis, start_worker, wait_until
from deploy.redis_cluster import ClusterNodes, start_redis_cluster
from shared import keys
from shared.blobs import FileBlobStore
from shared.catalogue import Catalogue
from shared.images import canonicalize
from shared.index_store import IndexStore
from shared.settings import CommonSettings, redis_client
from tests.helpers.images import distinct_images
from tests.integration.conftest import Service, base_env, stopping
from tests.integration.system import (
    CORE_WORKERS,
    child,
    forget,
    kill,
    post_images,
    start_system,
)
from tools.reshard import reshard

SHARDS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = Processes()
    try:
        yield procs, start_redis_cluster(procs, tmp_path_factory.mktemp("cluster"))
    finally:
        procs.stop()


@pytest.fixture
def cluster_layout():
    """This test process spells keys as the cluster's processes do, and back after."""
    keys.use_cluster_layout()
    yield
    keys.use_cluster_layout(False)


def data_client(nodes: ClusterNodes):
    return redis_client(CommonSettings(redis_cluster_nodes=nodes.nodes))


def canonical(data: bytes):
    return canonicalize(data, max_side=512, max_pixels=10_000_000)


def test_the_stores_work_on_a_cluster_and_spread_an_index_over_its_masters(
    cluster, cluster_layout, tmp_path
):
    _, nodes = cluster
    client = data_client(nodes)
    catalogue = Catalogue(client, FileBlobStore(tmp_path / "blobs"))
    store = IndexStore(client, SHARDS)
    ids = [f"spread-{n}" for n in range(24)]
    pictures = dict(zip(ids, distinct_images(len(ids), seed=5), strict=True))
    for image_id, data in pictures.items():
        catalogue.put(image_id, canonical(data), filename=None, metadata={"label": "x"})
    hashes = {i: catalogue.get_meta(i).content_hash for i in ids}
    assert store.add_vectors("vgg16", "v1", {i: b"\x02" + bytes(8) for i in ids}, hashes) == 24
    assert store.size("vgg16", "v1") == 24
    assert catalogue.postings.matching({"label": "x"}) == set(ids)

    masters = {
        nodes.master_port_of(keys.index_vectors("vgg16", "v1", shard, SHARDS))
        for shard in range(SHARDS)
    }
    assert len(masters) >= 2, "every shard of the index is on one master"
    entries = {nodes.master_port_of(keys.catalogue_meta(i)) for i in ids}
    assert len(entries) == 3, "the catalogue is not spread over the masters"
    # A shard's keys share a slot: one script or transaction reaches all of them.
    shard_keys = [
        keys.index_vectors("vgg16", "v1", 1, SHARDS),
        keys.index_log("vgg16", "v1", 1, SHARDS),
    ]
    assert len({client.keyslot(k) for k in shard_keys}) == 1

    # Deleted: gone from the catalogue and from every shard; its blobs too.
    assert catalogue.delete("spread-0")
    assert store.get_vectors("vgg16", "v1", ["spread-0"]) == [None]
    assert catalogue.get_image("spread-0") is None
    # An embedding that finishes after the delete takes its vector back.
    late = {"spread-0": b"\x02" + bytes(8)}
    assert store.add_vectors("vgg16", "v1", late, {"spread-0": hashes["spread-0"]}) == 0
    assert store.get_vectors("vgg16", "v1", ["spread-0"]) == [None]
    # An id given another picture: its old vector goes, and a late vector of the old
    # picture is taken back while one of the new picture stays.
    catalogue.put("spread-1", canonical(pictures["spread-2"]), filename=None, metadata={})
    assert store.get_vectors("vgg16", "v1", ["spread-1"]) == [None]
    old = {"spread-1": b"\x02" + bytes(8)}
    assert store.add_vectors("vgg16", "v1", old, {"spread-1": hashes["spread-1"]}) == 0
    new = {"spread-1": b"\x02" + bytes([1] * 8)}
    assert store.add_vectors("vgg16", "v1", new, {"spread-1": hashes["spread-2"]}) == 1
    assert store.get_vectors("vgg16", "v1", ["spread-1"]) == [new["spread-1"]]
    assert store.size("vgg16", "v1") == 23
    assert catalogue.size() == 23
    # Listed in the order added, across the partitions, page by page.
    in_order = [i for i in ids if i != "spread-0"]
    in_order.append(in_order.pop(0))  # spread-1, replaced, counts as added last
    assert catalogue.ids() == in_order
    assert catalogue.ids(5, 5) + catalogue.ids(10, 20) == in_order[5:]
    assert catalogue.existing(["spread-0", "spread-1", "nobody"]) == {"spread-1"}
    # Replicas follow each shard's log: the late vector and its taking back are in it.
    (shard,) = store.by_shard(["spread-0"])
    ops = [
        e.op for e in store.read_log("vgg16", "v1", "0-0", shard=shard) if e.image_id == "spread-0"
    ]
    assert ops == ["add", "del", "add", "del"]

    # Re-sharded from 4 to 8 shards, on the cluster: every vector copied, none embedded.
    (copied,) = reshard(client, SHARDS, 2 * SHARDS)
    assert (copied.method, copied.missing, copied.target_size) == ("vgg16", 0, 23), copied
    doubled = IndexStore(client, 2 * SHARDS)
    assert doubled.get_vectors("vgg16", "v1", ["spread-1"]) == [new["spread-1"]]


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory):
    """Gateway and workers with their data on the cluster (emptied first) and the Celery
    broker on a Redis of its own at REDIS_URL."""
    _, nodes = cluster
    for i in nodes.live:
        nodes.client(i).flushall()
    log_dir = tmp_path_factory.mktemp("cluster-logs")
    broker_procs, procs = Processes(), Processes()
    with stopping(log_dir, procs, broker_procs):
        broker = start_redis(broker_procs, tmp_path_factory.mktemp("broker"))
        env = base_env(broker, REDIS_CLUSTER_NODES=nodes.nodes, INDEX_SHARDS=str(SHARDS))
        yield start_system(procs, env, log_dir, workers=[*CORE_WORKERS, ("autoencoder", ["train"])])


def search_ids(service: Service, image: bytes, k: int = 10) -> list[str]:
    job = service.wait(service.search(image, k, methods="vgg16"), timeout=120)
    assert job["status"] == "done", job
    return [r["id"] for r in job["methods"]["vgg16"]["results"]]


def stats(service: Service) -> dict:
    return requests.get(f"{service.api}/stats", timeout=10).json()


def test_search_and_delete_through_the_api_on_a_cluster(service, cluster, cluster_layout):
    _, nodes = cluster
    images = distinct_images(8, seed=31)
    ids = [f"api-{n}" for n in range(8)]
    added = post_images(service, images, ids)
    assert added.status_code == 202, added.text
    assert service.wait(added.json()["job_id"], timeout=300)["status"] == "done"
    assert search_ids(service, images[3])[0] == "api-3"
    assert sorted(search_ids(service, images[0])) == ids

    deleted = requests.delete(f"{service.api}/images/api-3", headers=service.auth, timeout=10)
    assert deleted.status_code in (200, 204), deleted.text
    assert "api-3" not in search_ids(service, images[3])
    assert stats(service)["catalogue_size"] == 7
    assert stats(service)["methods"]["vgg16"]["index_size"] == 7
    # The data is on the cluster, spread: the broker's Redis holds none of it.
    client = data_client(nodes)
    version = client.get(keys.active_version("vgg16")).decode()
    holding = {
        nodes.master_port_of(keys.index_vectors("vgg16", version, shard, SHARDS))
        for shard in range(SHARDS)
        if client.hlen(keys.index_vectors("vgg16", version, shard, SHARDS))
    }
    assert len(holding) >= 2, holding


def test_a_search_worker_killed_loses_nothing_on_a_cluster(service):
    images = distinct_images(8, seed=31)
    before = search_ids(service, images[5])
    worker = child(service.procs, "vgg16-search-index")
    kill(worker, signal.SIGKILL)
    forget(service.procs, worker)
    start_worker(service.procs, "vgg16", ["search", "index"], service.env, service.log_dir)
    # The new replica loads the index from the cluster: the same answer.
    assert search_ids(service, images[5]) == before


def test_a_training_stores_its_model_and_fills_its_index_on_a_cluster(
    service, cluster, cluster_layout
):
    _, nodes = cluster
    images = distinct_images(6, seed=41)
    added = post_images(service, images, [f"train-{n}" for n in range(6)])
    assert service.wait(added.json()["job_id"], timeout=300)["status"] == "done"
    job = service.wait(service.train(2), timeout=400)
    assert job["status"] == "done", job
    trained = job["methods"]["autoencoder"]
    client = data_client(nodes)
    assert client.get(keys.active_version("autoencoder")).decode() == trained["version"]
    assert client.exists(keys.model_blob("autoencoder", trained["version"]))
    size = stats(service)["catalogue_size"]
    assert trained["index_size"] == size
    found = service.wait(service.search(images[4], 3, methods="autoencoder"))
    assert found["status"] == "done", found
    assert found["methods"]["autoencoder"]["results"][0]["id"] == "train-4"


def test_a_master_down_gives_503_and_the_service_recovers_once_it_is_back(
    service, cluster, cluster_layout
):
    procs, nodes = cluster
    # The master of the first image's catalogue partition: its entry is there.
    catalogue_master = nodes.index_of_port(nodes.master_port_of(keys.catalogue_meta("api-0")))
    size_before = stats(service)["catalogue_size"]
    nodes.kill_node(procs, catalogue_master)
    try:
        nodes.wait_for_state(procs, "fail", timeout=30)
        listing = requests.get(f"{service.api}/images", timeout=30)
        assert listing.status_code == 503, listing.text
        assert listing.json()["error"]["code"] == "storage_unavailable", listing.text
        upload = post_images(service, distinct_images(2, seed=77), ["down-0", "down-1"], timeout=60)
        assert upload.status_code == 503, upload.text
        health = requests.get(f"{service.api}/health", timeout=30)
        assert health.status_code == 503, health.text
    finally:
        restarted_in = nodes.restart_node(procs, catalogue_master)
    came_back = time.monotonic()
    # Nothing half-written: the refused upload left no entry and no vector.
    wait_until(lambda: _answers_stats(service), 60, "the gateway to read the cluster again")
    after = stats(service)
    assert after["catalogue_size"] == size_before
    assert after["methods"]["vgg16"]["index_size"] == size_before
    images = distinct_images(2, seed=77)
    added = post_images(service, images, ["down-0", "down-1"])
    assert added.status_code == 202, added.text
    assert service.wait(added.json()["job_id"], timeout=300)["status"] == "done"
    assert search_ids(service, images[1])[0] == "down-1"
    print(
        f"\ncluster master down: 503; back {restarted_in:.1f} s after its restart, "
        f"upload and search working {time.monotonic() - came_back:.1f} s later"
    )


def _answers_stats(service: Service) -> bool:
    try:
        return requests.get(f"{service.api}/stats", timeout=10).status_code == 200
    except requests.RequestException:
        return False
