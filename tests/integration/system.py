"""Systems of their own for tests that kill, restart or reconfigure processes.

The module-scoped ``service`` fixture (conftest.py) shares the session's Redis; the fault,
access and load tests need more: a Redis they may kill, a gateway started with other
settings, a worker they may kill -9. These helpers start the same processes the same way
(deploy.launcher), so what is tested is still what a user runs.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from deploy.launcher import (
    Processes,
    free_port,
    gateway_healthy,
    start_gateway,
    start_worker,
    wait_until,
)
from tests.integration.conftest import API_KEY, Service

# vgg16 search and index, autoencoder search and index: enough for searches and index jobs
# to finish (an index job waits for both methods). No trainer: these tests never train.
CORE_WORKERS: list[tuple[str, list[str]]] = [
    ("vgg16", ["search", "index"]),
    ("autoencoder", ["search", "index"]),
]


def queues_of(workers: list[tuple[str, list[str]]]) -> set[str]:
    return {f"{method}.{role}" for method, roles in workers for role in roles}


def start_system(
    procs: Processes,
    env: dict[str, str],
    log_dir: Path,
    workers: list[tuple[str, list[str]]] = CORE_WORKERS,
    port: int | None = None,
    timeout: float = 240,
    worker_env: dict[str, str] | None = None,
) -> Service:
    """Workers and a gateway on ``env``'s Redis; returns once every queue has a worker.
    ``worker_env``: the workers' environment when it differs from the gateway's."""
    port = port or free_port()
    for method, roles in workers:
        start_worker(procs, method, roles, worker_env or env, log_dir)
    start_gateway(procs, env, port, log_dir)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: gateway_healthy(base_url, queues_of(workers)), timeout, "workers", procs)
    return Service(base_url, API_KEY, env, procs, log_dir)


def start_sharded_vgg16(
    procs: Processes,
    env: dict[str, str],
    log_dir: Path,
    workers: list[tuple[str, list[str], dict[str, str]]],
) -> Service:
    """vgg16 workers of an index split into ``env``'s INDEX_SHARDS, each given as (process
    name, roles, its own settings such as SHARDS), and a gateway; returns once every one of
    their queues and every shard's queue has a worker."""
    for name, roles, own in workers:
        start_worker(procs, "vgg16", roles, {**env, **own}, log_dir, name=name)
    port = free_port()
    start_gateway(procs, env, port, log_dir)
    base_url = f"http://127.0.0.1:{port}"
    queues = {f"vgg16.{role}" for _, roles, _ in workers for role in roles}
    queues |= {f"vgg16.search.shard-{k}" for k in range(int(env["INDEX_SHARDS"]))}
    wait_until(lambda: gateway_healthy(base_url, queues), 240, "sharded workers", procs)
    return Service(base_url, API_KEY, env, procs, log_dir)


def start_extra_gateway(
    service: Service, log_dir: Path, **overrides: str
) -> tuple[Service, subprocess.Popen]:
    """A second gateway on the service's Redis (so its workers) with other settings."""
    env = {**service.env, **overrides}
    port = free_port()
    procs = Processes()
    process = start_gateway(procs, env, port, log_dir)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(base_url), 60, "the extra gateway to answer", procs)
    return Service(base_url, service.api_key, env, procs, log_dir), process


def answers(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/api/v1/health", timeout=2).status_code in (200, 503)
    except requests.RequestException:
        return False


def child(procs: Processes, name: str) -> subprocess.Popen:
    """The newest live-or-dead child process started under ``name``."""
    matches = [process for n, process in procs.children if n == name]
    assert matches, f"no process named {name!r}"
    return matches[-1]


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    """Signal one child's process group (it was started in a session of its own) and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    process.wait(timeout)


def forget(procs: Processes, process: subprocess.Popen) -> None:
    """Stop tracking a child that is gone (so check_alive does not report it)."""
    procs.children[:] = [(n, p) for n, p in procs.children if p is not process]


def post_images(
    service: Service, images: list[bytes], ids: list[str], timeout: float = 120
) -> requests.Response:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in zip(ids, images, strict=True)]
    return requests.post(
        f"{service.api}/images",
        files=files,
        data=[("id", i) for i in ids],
        headers=service.auth,
        timeout=timeout,
    )


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result
