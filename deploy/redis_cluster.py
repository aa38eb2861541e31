"""A private Redis Cluster of a few masters on this machine, for the tests and the benches
(REDIS_CLUSTER_NODES takes its ``nodes``); a test may kill one master and start it again.

Each master is a redis-server started like ``deploy.launcher.start_redis`` (append-only, no
RDB snapshots, 127.0.0.1 only) with cluster mode on; ``redis-cli --cluster create`` assigns
the 16384 slots among them, without replicas. With no replica there is no failover: a master
killed with SIGKILL makes the whole cluster report ``cluster_state:fail`` once the others
agree it is gone (after ``cluster-node-timeout``), and ``ok`` again once it is back on its
port with its ``nodes.conf`` and append-only file.
"""

import argparse
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from deploy.launcher import Processes, free_port, redis_server_binary, wait_until

SLOTS = 16384
# Short so that a test sees a killed master declared failed in seconds, not the 15 s default.
NODE_TIMEOUT_MS = 2000
CREATE_TIMEOUT_SECONDS = 60


@dataclass
class ClusterNodes:
    """The masters of a private cluster: node ``i`` listens on ``ports[i]``, keeps its data
    in ``dirs[i]`` and runs as the child named ``process_name(i)``."""

    ports: list[int]
    bus_ports: list[int]
    dirs: list[Path]
    # Indexes of the nodes a test killed and has not started again.
    down: set[int] = field(default_factory=set)

    @property
    def nodes(self) -> str:
        """What REDIS_CLUSTER_NODES takes: ``127.0.0.1:p1,127.0.0.1:p2,...``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def live(self) -> list[int]:
        return [i for i in range(len(self.ports)) if i not in self.down]

    def process_name(self, i: int) -> str:
        return f"redis-cluster-{i}"

    def client(self, i: int) -> redis.Redis:
        """A plain (non-cluster) client on node ``i``, for CLUSTER commands and checks."""
        return _node_client(self.ports[i])

    def cluster_info(self, i: int) -> dict[str, str]:
        """Node ``i``'s own view of the cluster (CLUSTER INFO, values as strings)."""
        return {k: str(v) for k, v in self.client(i).cluster("INFO").items()}

    def kill_node(self, procs: Processes, i: int) -> None:
        """SIGKILL node ``i`` (no shutdown, no AOF rewrite: as if its machine died)."""
        name = self.process_name(i)
        process = [p for n, p in procs.children if n == name][-1]
        os.killpg(process.pid, signal.SIGKILL)  # each child leads a process group of its own
        process.wait(30)
        # Untracked, so that wait_until(..., procs) does not take the kill for a crash.
        procs.children[:] = [(n, p) for n, p in procs.children if p is not process]
        self.down.add(i)

    def restart_node(self, procs: Processes, i: int, timeout: float = 60) -> float:
        """Start node ``i`` again on its port and directory and wait until every node says the
        cluster is ok; returns the seconds from start to ok."""
        started = time.monotonic()
        _start_node(procs, self.process_name(i), self.ports[i], self.bus_ports[i], self.dirs[i])
        self.down.discard(i)
        self.wait_for_state(procs, "ok", timeout)
        return time.monotonic() - started

    def wait_for_state(self, procs: Processes, state: str, timeout: float = 60) -> None:
        """Until every live node reports ``cluster_state:<state>`` (``ok`` also needs all slots
        served and every master known)."""

        def reached() -> bool:
            return all(self._node_in_state(i, state) for i in self.live)

        wait_until(reached, timeout, f"every live cluster node to report {state}", procs)

    def _node_in_state(self, i: int, state: str) -> bool:
        try:
            info = self.cluster_info(i)
        except redis.RedisError:
            return False  # not answering yet (just started, or loading its append-only file)
        if info.get("cluster_state") != state:
            return False
        if state != "ok":
            return True
        return info.get("cluster_slots_ok") == str(SLOTS) and info.get(
            "cluster_known_nodes"
        ) == str(len(self.ports))

    def master_port_of(self, key: str | bytes) -> int:
        """The port of the master that serves ``key``'s slot, asked of a live node."""
        client = self.client(self.live[0])
        slot = int(client.cluster("KEYSLOT", key))
        for start, end, master, *_replicas in client.cluster("SLOTS"):
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise LookupError(f"no master serves slot {slot} (key {key!r})")

    def index_of_port(self, port: int) -> int:
        return self.ports.index(port)


def _node_client(port: int) -> redis.Redis:
    # Short timeouts: a killed node must make a check fail fast, not hang it.
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _start_node(procs: Processes, name: str, port: int, bus_port: int, data_dir: Path) -> None:
    procs.start(
        name,
        [
            redis_server_binary(),
            "--port", str(port),
            # The bus port is chosen too: the default (port + 10000) may be taken, or past 65535.
            "--cluster-port", str(bus_port),
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # in --dir: what a restart rejoins with
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "yes",
            "--save", "",
        ],
        env=dict(os.environ),
        log_path=data_dir / "redis.log",
    )  # fmt: skip


def _answers(port: int) -> bool:
    try:
        return bool(_node_client(port).ping())
    except redis.RedisError:
        return False


def start_redis_cluster(
    procs: Processes, data_dir: Path, masters: int = 3, timeout: float = 60
) -> ClusterNodes:
    """``masters`` cluster nodes on free 127.0.0.1 ports, joined into one cluster without
    replicas; returns once every node reports ``cluster_state:ok`` with all slots served."""
    ports = [free_port() for _ in range(masters)]
    bus_ports = [free_port() for _ in range(masters)]
    if len(set(ports + bus_ports)) != 2 * masters:
        raise RuntimeError(f"free_port() returned a port twice: {ports} {bus_ports}")
    dirs = [data_dir / f"node-{i}" for i in range(masters)]
    cluster = ClusterNodes(ports, bus_ports, dirs)
    for i, node_dir in enumerate(dirs):
        node_dir.mkdir(parents=True, exist_ok=True)
        _start_node(procs, cluster.process_name(i), ports[i], bus_ports[i], node_dir)
    for port in ports:
        wait_until(lambda port=port: _answers(port), 15, f"cluster node {port} to answer", procs)
    create = [
        "redis-cli", "--cluster", "create",
        *(f"127.0.0.1:{port}" for port in ports),
        "--cluster-replicas", "0",
        "--cluster-yes",
    ]  # fmt: skip
    try:
        subprocess.run(
            create, check=True, capture_output=True, text=True, timeout=CREATE_TIMEOUT_SECONDS
        )
    except subprocess.CalledProcessError as err:
        raise RuntimeError(
            f"redis-cli --cluster create failed ({err.returncode}):\n{err.stdout}{err.stderr}"
        ) from err
    except subprocess.TimeoutExpired as err:
        # TimeoutExpired keeps the output as bytes even with text=True.
        output = err.stdout.decode(errors="replace") if err.stdout else ""
        raise RuntimeError(
            f"redis-cli --cluster create took over {CREATE_TIMEOUT_SECONDS}s:\n{output}"
        ) from err
    cluster.wait_for_state(procs, "ok", timeout)
    return cluster


def main() -> int:
    """``python -m deploy.redis_cluster``: a scratch cluster to try the service on; it and
    its data go at Ctrl-C (or SIGTERM)."""
    parser = argparse.ArgumentParser(description="a scratch local Redis Cluster, until Ctrl-C")
    parser.add_argument("--masters", type=int, default=3)
    args = parser.parse_args()

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="redis-cluster-") as scratch:
        try:
            cluster = start_redis_cluster(procs, Path(scratch), args.masters)
            print(f"REDIS_CLUSTER_NODES={cluster.nodes}", flush=True)
            while True:
                procs.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        finally:
            procs.stop()


if __name__ == "__main__":
    raise SystemExit(main())
