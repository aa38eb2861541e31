"""The system as `make run` starts it (deploy.launcher, its defaults), tried as careless and
hostile clients would: idle connections, long polls, a worker killed, then a clean stop.

The launcher runs with READS_REQUIRE_KEY=true, so these tests also show that it works with
reads closed (it once crashed reading /stats without the key).
"""

import concurrent.futures
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from deploy.launcher import free_port, gateway_healthy, wait_until
from tests.clients import closed_by_server, open_stalled_connections
from tests.conftest import SAMPLES, fresh_database
from tests.integration.conftest import API_KEY, ROOT, base_env, dump_logs

pytestmark = pytest.mark.integration

ALL_QUEUES = {"vgg16.search", "vgg16.index", "autoencoder.search", "autoencoder.index",
              "autoencoder.train"}  # fmt: skip
SLOW_CLIENTS = 200
LONG_POLLS = 64
IDLE_TIMEOUT = 20  # the default of GATEWAY_IDLE_TIMEOUT_SECONDS


@dataclass
class Launched:
    process: subprocess.Popen
    base_url: str
    output: Path
    log_dir: Path

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/v1"

    def health(self) -> dict:
        return requests.get(f"{self.api}/health", headers=AUTH, timeout=5).json()

    def worker_pid(self, queue: str) -> int:
        """The process id in the name of the queue's one live worker (…-<pid>@host)."""
        (name,) = self.health()["queues"][queue]["workers"]
        return int(name.split("@")[0].rsplit("-", 1)[1])


AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def launched(redis_url, tmp_path_factory):
    var = tmp_path_factory.mktemp("launcher-var")
    port = free_port()
    env = base_env(fresh_database(redis_url), GATEWAY_PORT=str(port), READS_REQUIRE_KEY="true")
    output = var / "launcher.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.launcher", "--no-sample", "--var-dir", str(var)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    system = Launched(process, f"http://127.0.0.1:{port}", output, var / "logs")
    try:
        wait_until(
            lambda: (
                process.poll() is None and gateway_healthy(system.base_url, ALL_QUEUES, API_KEY)
            ),
            300,
            "the launcher's system to be ready",
        )
        yield system
    except Exception:
        sys.stderr.write(output.read_text(errors="replace"))
        dump_logs(system.log_dir)
        raise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def search_round_trip(system: Launched, photo: Path) -> float:
    """Seconds from sending a search to reading its finished results."""
    started = time.monotonic()
    response = requests.post(
        f"{system.api}/searches",
        files={"file": (photo.name, photo.read_bytes())},
        data={"k": "5"},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    while True:
        job = requests.get(
            f"{system.base_url}{response.json()['status_url']}",
            params={"wait": 10},
            headers=AUTH,
            timeout=30,
        ).json()
        if job["status"] in ("done", "failed"):
            assert job["status"] == "done", job
            return time.monotonic() - started


def test_slow_and_idle_clients_cannot_starve_the_gateway(launched):
    photos = sorted(SAMPLES.rglob("*.jpg"))[:3]
    added = requests.post(
        f"{launched.api}/images",
        files=[("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
        headers=AUTH,
        timeout=60,
    )
    assert added.status_code == 202, added.text
    idle = statistics.median(search_round_trip(launched, photos[0]) for _ in range(5))

    # Jobs that stay unfinished while the clients wait on them: a training whose worker is
    # paused (SIGSTOP), so every long poll holds on for its full 30 s.
    trainer = launched.worker_pid("autoencoder.train")
    os.kill(trainer, signal.SIGSTOP)
    stop = threading.Event()
    try:
        job = requests.post(
            f"{launched.api}/models/autoencoder/trainings", headers=AUTH, timeout=10
        )
        assert job.status_code == 202, job.text
        status_url = f"{launched.base_url}{job.json()['status_url']}"

        def long_poll() -> int:
            polls = 0
            while not stop.is_set():
                reply = requests.get(status_url, params={"wait": 30}, headers=AUTH, timeout=60)
                assert reply.status_code == 200, reply.text
                polls += 1
                time.sleep(float(reply.headers.get("Retry-After", 0)))
            return polls

        opened = time.monotonic()
        port = int(launched.base_url.rsplit(":", 1)[1])
        slow = open_stalled_connections("127.0.0.1", port, SLOW_CLIENTS)
        with concurrent.futures.ThreadPoolExecutor(LONG_POLLS) as pool:
            pollers = [pool.submit(long_poll) for _ in range(LONG_POLLS)]
            time.sleep(2)  # every long poll is in
            health_times = []
            for _ in range(20):
                started = time.monotonic()
                reply = requests.get(f"{launched.api}/health", timeout=5)
                health_times.append(time.monotonic() - started)
                assert reply.status_code == 200
                time.sleep(0.1)
            loaded = statistics.median(search_round_trip(launched, photos[0]) for _ in range(5))
            held = time.monotonic() - opened
            assert held < IDLE_TIMEOUT - 2, "measured too late: the slow clients may be gone"
            # The stalled connections are closed by the server within its idle timeout.
            wait_until(
                lambda: all(closed_by_server(s) for s in slow),
                IDLE_TIMEOUT + 15 - held,
                "the server to close connections that never finished their headers",
            )
            closed_after = time.monotonic() - opened
            stop.set()
            for poller in pollers:
                assert poller.result(timeout=90) >= 1
        for sock in slow:
            sock.close()
        print(
            f"\n{SLOW_CLIENTS} stalled connections + {LONG_POLLS} long polls: /health max "
            f"{1000 * max(health_times):.0f} ms, p50 {1000 * statistics.median(health_times):.0f}"
            f" ms; search round trip p50 {loaded:.2f} s vs {idle:.2f} s idle; stalled "
            f"connections closed after {closed_after:.1f} s"
        )
        assert max(health_times) < 0.2, health_times
        assert loaded <= 1.5 * idle, (loaded, idle)
        assert closed_after <= 30, closed_after
    finally:
        stop.set()
        os.kill(trainer, signal.SIGCONT)


def test_a_killed_worker_is_started_again_and_health_names_its_queue(launched):
    victim = launched.worker_pid("vgg16.search")
    os.kill(victim, signal.SIGKILL)
    # The launcher clears the dead worker's heartbeat: /health names the queue at once.
    wait_until(
        lambda: launched.health().get("missing") == ["vgg16.search"],
        10,
        "/health to name the queue that lost its worker",
    )
    assert launched.health()["status"] == "degraded"
    started = time.monotonic()
    wait_until(
        lambda: launched.health()["queues"]["vgg16.search"]["workers"],
        120,
        "the launcher to start the vgg16 search worker again",
    )
    print(f"\nvgg16 search worker back in {time.monotonic() - started:.1f} s")
    assert launched.worker_pid("vgg16.search") != victim
    assert launched.process.poll() is None, "the launcher stopped"
    assert launched.health()["status"] == "ok"
    photo = sorted(SAMPLES.rglob("*.jpg"))[0]
    assert search_round_trip(launched, photo) < 60
    assert "vgg16-search exited with code -9" in launched.output.read_text()


def test_the_launcher_keeps_the_given_key_where_readme_reads_it(launched):
    kept = launched.output.parent / "api_key"
    assert kept.read_text().strip() == API_KEY  # README: KEY=$(cat var/api_key)
    assert kept.stat().st_mode & 0o777 == 0o600
    printed = launched.output.read_text()
    assert f"Web page: {launched.base_url}/" in printed and API_KEY in printed


def test_sigterm_stops_everything_the_launcher_started(launched):
    workers = [launched.worker_pid(q) for q in sorted(ALL_QUEUES)]
    launched.process.send_signal(signal.SIGTERM)
    assert launched.process.wait(60) == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{launched.api}/health", timeout=5)
