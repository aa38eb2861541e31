"""The cluster harness itself: keys spread over masters, a killed master fails its writes
(then every write, once the cluster says fail) and comes back with its append-only data."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from deploy.launcher import Processes
from deploy.redis_cluster import ClusterNodes, start_redis_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ClusterNodes, Processes]]:
    procs = Processes()
    try:
        yield start_redis_cluster(procs, tmp_path), procs
    finally:
        procs.stop()


def cluster_client(nodes: ClusterNodes) -> RedisCluster:
    # Short socket timeouts so that a write to a dead master fails in seconds.
    return RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in nodes.ports],
        socket_timeout=2,
        socket_connect_timeout=1,
    )


def failed_write(client: RedisCluster, key: str) -> tuple[redis.RedisError, float]:
    """The error a SET raises, and the seconds it took to raise it."""
    started = time.monotonic()
    with pytest.raises(redis.RedisError) as raised:
        client.set(key, "never")
    return raised.value, time.monotonic() - started


def test_hash_tags_keep_keys_on_one_slot_and_different_tags_spread_over_masters(cluster):
    nodes, _procs = cluster
    assert nodes.nodes == ",".join(f"127.0.0.1:{port}" for port in nodes.ports)
    client = cluster_client(nodes)
    tagged = [f"{{user-7}}:{field}" for field in ("vectors", "ids", "log")]
    for key in tagged:
        client.set(key, key)
    node = nodes.client(0)
    assert len({node.cluster("KEYSLOT", key) for key in tagged}) == 1
    assert len({nodes.master_port_of(key) for key in tagged}) == 1

    masters = {nodes.master_port_of(f"{{tag-{n}}}:k") for n in range(30)}
    assert len(masters) > 1, masters
    # Each key is really stored on the master the harness names (a plain client there reads it).
    for n in range(30):
        key = f"{{tag-{n}}}:k"
        client.set(key, n)
        owner = nodes.client(nodes.index_of_port(nodes.master_port_of(key)))
        assert owner.get(key) == str(n).encode()
    print(f"\n30 tags over masters {sorted(masters)} of {nodes.ports}")


def test_a_killed_master_fails_writes_and_rejoins_with_its_append_only_data(cluster):
    nodes, procs = cluster
    client = cluster_client(nodes)
    key = "kept-across-the-kill"
    client.set(key, "kept")
    victim = nodes.index_of_port(nodes.master_port_of(key))
    other_key = next(
        k
        for k in (f"other-{n}" for n in range(100))
        if nodes.master_port_of(k) != nodes.ports[victim]
    )

    nodes.kill_node(procs, victim)
    killed = time.monotonic()
    down_error, down_seconds = failed_write(client, key)
    witness = nodes.live[0]
    state_then = nodes.cluster_info(witness)["cluster_state"]
    # (a) Before the others declare it failed, only the dead master's slots fail.
    if state_then == "ok":
        client.set(other_key, "still served")

    nodes.wait_for_state(procs, "fail", timeout=30)
    failed_after = time.monotonic() - killed
    fail_error, fail_seconds = failed_write(client, key)
    # (b) Once the cluster says fail, the live masters refuse their own keys too.
    other_error, other_seconds = failed_write(client, other_key)

    restart_to_ok = nodes.restart_node(procs, victim, timeout=60)
    assert client.get(key) == b"kept"  # from the append-only file
    client.set(key, "written again")
    client.set(other_key, "written again")
    assert client.get(key) == b"written again"
    print(
        f"\nmaster down, cluster_state {state_then!r} on a live node: "
        f"{type(down_error).__module__}.{type(down_error).__name__} ({down_error}) "
        f"in {down_seconds:.2f} s"
        f"\ncluster_state:fail {failed_after:.1f} s after the kill"
        f"\nafter fail, the dead master's key: {type(fail_error).__module__}."
        f"{type(fail_error).__name__} ({fail_error}) in {fail_seconds:.2f} s"
        f"\nafter fail, a live master's key: {type(other_error).__module__}."
        f"{type(other_error).__name__} ({other_error}) in {other_seconds:.2f} s"
        f"\nrestart to ok on every node: {restart_to_ok:.1f} s"
    )
