"""The compose stack as a user runs it: `make images`, `docker-compose up`, then HTTP only.

One stack for the module, under a project name and on ports of its own: 40 sample photos
indexed while the index worker is killed, searches, a Redis restart, a second search
replica, Flower's door; `down -v` at the end, also when something failed.

Where no Docker engine answers this module is skipped with the reason; with CI=true (as
.ci/run sets it) it fails instead, so CI cannot pass without having run it.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.clients import open_stalled_connections

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "grocery-store" / "images"
ARTIFACTS = ROOT / "test-artifacts"
CATALOGUE_SIZE = 40
# Chunks of 2 images: 20 index tasks, so the kill lands between chunks done and to do.
INDEX_CHUNK_SIZE = 2
# A task whose worker died is delivered again this long after its last heartbeat (the
# default of TASK_VISIBILITY_TIMEOUT_SECONDS, which the stack keeps).
VISIBILITY_TIMEOUT = 30
STARTUP_TIMEOUT = 900  # four TensorFlow workers loading at once on two shared cores
FLOWER_AUTH = "deploy-test:" + uuid.uuid4().hex

pytestmark = pytest.mark.timeout(3600)  # a cold image build alone takes minutes


def compose_command() -> list[str] | None:
    """Compose v1 (`docker-compose`, Debian's package) or v2 (`docker compose`)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return ["docker", "compose"] if v2.returncode == 0 else None


def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    for tool in ("docker", "make"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if compose_command() is None:
        return "neither docker-compose nor `docker compose` is installed"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        return f"no Docker engine answers: {info.stderr.strip()[:300]}"
    return None


def require_engine() -> None:
    problem = engine_problem()
    if problem is None:
        return
    message = f"DEPLOYMENT TEST NOT RUN: {problem} (.ci/run installs and starts one)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI=true requires it", pytrace=False)
    # A skip alone is one "s" among the dots: the warnings summary repeats it at the end.
    warnings.warn(message, UserWarning, stacklevel=1)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    api: str
    key: str
    flower_port: int
    compose_cli: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        # The monitoring profile (Flower) only where a command names it.
        profile = ["--profile", "monitoring"] if "flower" in args or "down" in args else []
        command = [*self.compose_cli, "-p", self.project, *profile, *args]
        done = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def inspect(self, container: str) -> dict:
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)[0]

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        return state.get("Health", {}).get("Status", state["Status"])

    def wait_healthy(self, services: list[str], timeout: float = STARTUP_TIMEOUT) -> None:
        def all_healthy() -> bool:
            return all(
                (found := self.containers(s)) and all(self.health(c) == "healthy" for c in found)
                for s in services
            )

        wait_until(all_healthy, timeout, f"{', '.join(services)} to be healthy", every=3)

    def redis_state(self) -> dict:
        """What Redis holds, read inside a worker container (Redis is not published)."""
        script = (
            "import collections, json, redis; from shared import keys; "
            "from shared.settings import CommonSettings; "
            "r = redis.Redis.from_url(CommonSettings().redis_url); "
            "v = (r.get(keys.active_version('vgg16')) or b'').decode(); "
            "adds = collections.Counter(f[b'id'].decode() for _, f in "
            "r.xrange(keys.index_log('vgg16', v)) if f[b'op'] == b'add') if v else {}; "
            "print(json.dumps({'version': v, 'catalogue': r.zcard(keys.CATALOGUE_IDS), "
            "'vectors': r.hlen(keys.index_vectors('vgg16', v)) if v else 0, "
            "'adds': adds, 'unacked': r.hlen('unacked'), 'aof': r.info('persistence')"
            "['aof_enabled']}))"
        )
        return json.loads(self.compose("exec", "-T", "vgg16", "python", "-c", script))

    def search(self, path: Path, methods: str = "vgg16,autoencoder", k: int = 5) -> dict:
        with path.open("rb") as file:
            response = requests.post(
                f"{self.api}/searches",
                files={"file": (path.name, file, "image/jpeg")},
                data={"k": str(k), "methods": methods},
                timeout=30,
            )
        assert response.status_code == 202, response.text
        return self.wait_job(response.json()["job_id"], timeout=120)

    def job(self, job_id: str) -> dict:
        response = requests.get(f"{self.api}/jobs/{job_id}", timeout=30)
        response.raise_for_status()
        return response.json()

    def wait_job(self, job_id: str, timeout: float) -> dict:
        def finished() -> dict | None:
            job = self.job(job_id)
            return job if job["status"] in ("done", "failed") else None

        return wait_until(finished, timeout, f"job {job_id}")

    def listing(self) -> list[str]:
        response = requests.get(f"{self.api}/images", params={"limit": 100}, timeout=30)
        response.raise_for_status()
        return [image["id"] for image in response.json()["images"]]

    def stats(self) -> dict:
        response = requests.get(f"{self.api}/stats", timeout=30)
        response.raise_for_status()
        return response.json()


def catalogue_photos() -> list[Path]:
    photos = sorted(SAMPLES.rglob("*.jpg"))[:CATALOGUE_SIZE]
    assert len(photos) == CATALOGUE_SIZE, f"{SAMPLES} holds fewer than {CATALOGUE_SIZE} photos"
    return photos


def photo_id(path: Path) -> str:
    return path.stem  # e.g. Garlic_017: the sample file names are unique


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The images built with `make images`, the stack up and healthy; torn down afterwards."""
    require_engine()
    port = free_port()
    key = uuid.uuid4().hex
    project = f"imgsearch-test-{os.getpid()}"
    env = dict(os.environ)
    env.update(
        API_KEY=key,
        GATEWAY_BIND="127.0.0.1",
        GATEWAY_PORT=str(port),
        FLOWER_PORT=str(free_port()),
        INDEX_CHUNK_SIZE=str(INDEX_CHUNK_SIZE),
    )
    env.pop("FLOWER_BASIC_AUTH", None)
    env.pop("TASK_VISIBILITY_TIMEOUT_SECONDS", None)  # the stack's default is what is tested
    stack = Stack(
        project,
        env,
        f"http://127.0.0.1:{port}/api/v1",
        key,
        int(env["FLOWER_PORT"]),
        compose_command() or [],
    )
    started = time.monotonic()
    subprocess.run(["make", "images"], cwd=ROOT, env=env, check=True, timeout=3000)
    stack.timings["make images (s)"] = time.monotonic() - started
    try:
        started = time.monotonic()
        stack.compose("up", "-d", timeout=600)
        stack.wait_healthy(
            ["redis", "gateway", "vgg16", "vgg16-indexer", "autoencoder", "autoencoder-trainer"]
        )
        stack.timings["up to healthy (s)"] = time.monotonic() - started
        yield stack
    finally:
        tear_down(stack)


def tear_down(stack: Stack) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    logs = stack.compose("logs", "--no-color", "--tail", "200", timeout=120, check=False)
    (ARTIFACTS / "deploy-compose.log").write_text(logs)
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True, check=True
    ).stdout.split()
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", label],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    (ARTIFACTS / "deploy-timings.json").write_text(json.dumps(stack.timings, indent=2) + "\n")
    print(f"\ndeployment test timings: {json.dumps(stack.timings)}")
    assert (left, volumes) == ([], []), f"down -v left containers {left}, volumes {volumes}"


@pytest.fixture(scope="module")
def indexed(stack: Stack) -> dict:
    """40 photos uploaded over HTTP; the index worker's process killed -9 in the middle."""
    photos = catalogue_photos()
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    ids = [("id", photo_id(p)) for p in photos]
    started = time.monotonic()
    response = requests.post(
        f"{stack.api}/images",
        files=files,
        data=ids,
        headers={"X-API-Key": stack.key},
        timeout=120,
    )
    assert response.status_code == 202, response.text
    assert response.json()["rejected"] == []
    job_id = response.json()["job_id"]
    parts = CATALOGUE_SIZE // INDEX_CHUNK_SIZE

    def some_parts_done() -> dict | None:
        vgg16 = stack.job(job_id)["methods"]["vgg16"]
        return vgg16 if vgg16.get("parts_done", 0) >= 2 else None

    (indexer,) = stack.containers("vgg16-indexer")
    restarts_before = stack.inspect(indexer)["RestartCount"]
    at_kill = wait_until(some_parts_done, 300, "the first chunks to be indexed", every=0.2)
    # The worker process dies as in a crash or an OOM kill. (`docker-compose kill -s KILL`
    # would not do: Docker takes a kill through its API as a deliberate stop, and restart
    # policies never restart a container stopped that way.)
    stack.compose(
        "exec",
        "-T",
        "vgg16-indexer",
        "python",
        "-c",
        "import os, signal\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
        "    if int(pid) != os.getpid() and b'services.vgg16' in cmd:\n"
        "        os.kill(int(pid), signal.SIGKILL)\n",
    )
    killed_at = time.monotonic()
    # The chunk the worker held, taken and not acknowledged: what must be delivered again.
    unacked_at_kill = stack.redis_state()["unacked"]
    wait_until(
        lambda: stack.inspect(indexer)["RestartCount"] > restarts_before,
        120,
        "the restart policy to start the index worker again",
    )
    restarted_after = time.monotonic() - killed_at
    stack.wait_healthy(["vgg16-indexer"], timeout=600)
    healthy_after = time.monotonic() - killed_at
    job = stack.wait_job(job_id, timeout=VISIBILITY_TIMEOUT + 600)
    stack.timings["index 40 photos, with the kill (s)"] = time.monotonic() - started
    stack.timings["kill -> container restarted (s)"] = restarted_after
    stack.timings["kill -> worker healthy (s)"] = healthy_after
    stack.timings["kill -> job done (s)"] = time.monotonic() - killed_at
    return {
        "job": job,
        "parts": parts,
        "at_kill": at_kill,
        "unacked_at_kill": unacked_at_kill,
        "ids": [i for _, i in ids],
    }


def test_every_service_is_healthy_and_redis_appends_to_its_volume(stack):
    for service in ("redis", "gateway", "vgg16", "vgg16-indexer", "autoencoder"):
        for container in stack.containers(service):
            details = stack.inspect(container)
            assert details["State"]["Health"]["Status"] == "healthy", service
            assert details["HostConfig"]["Init"] is True, f"{service} runs without an init"
            assert details["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", service
            assert details["Config"]["User"] not in ("", "0", "root"), f"{service} runs as root"
    (redis_container,) = stack.containers("redis")
    mounts = stack.inspect(redis_container)["Mounts"]
    assert [(m["Type"], m["Destination"]) for m in mounts] == [("volume", "/data")]
    assert stack.redis_state()["aof"] == 1
    health = requests.get(f"{stack.api}/health", timeout=10).json()
    assert health["status"] == "ok", health


def test_index_worker_killed_mid_upload_comes_back_and_nothing_is_lost_or_doubled(stack, indexed):
    job, parts = indexed["job"], indexed["parts"]
    assert indexed["at_kill"]["parts_done"] < parts, "the kill came too late to interrupt"
    assert indexed["unacked_at_kill"] >= 1, "the worker held no task when it was killed"
    vgg16 = job["methods"]["vgg16"]
    assert job["status"] == "done" and vgg16["status"] == "done", job
    assert (vgg16["parts"], vgg16["parts_done"]) == (parts, parts)
    assert vgg16["embedded"] + vgg16["already_indexed"] == CATALOGUE_SIZE, vgg16

    state = stack.redis_state()
    assert state["catalogue"] == state["vectors"] == CATALOGUE_SIZE, state
    assert state["unacked"] == 0, "a task was left taken and never acknowledged"
    assert sorted(state["adds"]) == sorted(indexed["ids"]), "an image missing from the index"
    doubled = {image: n for image, n in state["adds"].items() if n > 1}
    assert doubled == {}, f"written to the index more than once: {doubled}"
    listed = stack.listing()
    assert sorted(listed) == sorted(indexed["ids"]) and len(set(listed)) == len(listed)
    stats = stack.stats()
    assert stats["catalogue_size"] == stats["methods"]["vgg16"]["index_size"] == CATALOGUE_SIZE


def test_images_are_files_of_the_app_user_on_the_blob_volume_not_in_redis(stack, indexed):
    (gateway,) = stack.containers("gateway")
    mounts = {m["Destination"]: m for m in stack.inspect(gateway)["Mounts"]}
    assert mounts["/app/var/blobs"]["Type"] == "volume" and mounts["/app/var/blobs"]["RW"]
    (trainer,) = stack.containers("autoencoder-trainer")
    mounts = {m["Destination"]: m for m in stack.inspect(trainer)["Mounts"]}
    assert mounts["/app/var/blobs"]["RW"] is False  # workers only read it
    owners = stack.compose(
        "exec", "-T", "gateway", "find", "/app/var/blobs", "-type", "f", "-printf", "%u\\n"
    ).split()
    assert len(owners) == 2 * CATALOGUE_SIZE and set(owners) == {"app"}  # image + thumbnail
    script = (
        "import redis; from shared.settings import CommonSettings; "
        "r = redis.Redis.from_url(CommonSettings().redis_url); "
        "print(len(r.keys('catalog:image:*')) + len(r.keys('catalog:thumb:*')))"
    )
    assert stack.compose("exec", "-T", "vgg16", "python", "-c", script).strip() == "0"
    photo = catalogue_photos()[3]
    thumbnail = requests.get(f"{stack.api}/images/{photo_id(photo)}/thumbnail", timeout=10)
    assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\xff\xd8")


def test_vgg16_ranks_the_query_image_first_and_the_autoencoder_answers(stack, indexed):
    query = catalogue_photos()[7]
    job = stack.search(query)
    assert job["status"] == "done", job
    vgg16 = job["methods"]["vgg16"]
    assert vgg16["results"][0]["id"] == photo_id(query), vgg16["results"][:3]
    autoencoder = job["methods"]["autoencoder"]
    assert autoencoder["status"] == "done", autoencoder
    assert autoencoder.get("reason") == "not_trained" or autoencoder["results"], autoencoder


def test_stalled_connections_do_not_block_the_gateway(stack, indexed):
    """The container's gateway is the same front door as make run's (README, "Front door")."""
    stalled = open_stalled_connections("127.0.0.1", int(stack.env["GATEWAY_PORT"]), 200)
    try:
        times = []
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(f"{stack.api}/health", timeout=5).status_code == 200
            times.append(time.monotonic() - started)
        assert max(times) < 0.2, times
        job = stack.search(catalogue_photos()[3], methods="vgg16")
        assert job["status"] == "done", job
    finally:
        for sock in stalled:
            sock.close()


def test_redis_restart_keeps_the_catalogue_and_the_indexes(stack, indexed):
    before = (stack.stats(), sorted(stack.listing()))
    started = time.monotonic()
    stack.compose("restart", "redis")
    stack.wait_healthy(["redis"], timeout=120)
    after = wait_until(
        lambda: _stats_and_listing(stack), 120, "the gateway to answer again after Redis"
    )
    stack.timings["redis restart -> gateway answers (s)"] = time.monotonic() - started
    assert after == before
    query = catalogue_photos()[21]
    job = wait_until(
        lambda: _search_done(stack, query), 180, "a search answered after the Redis restart"
    )
    assert job["methods"]["vgg16"]["results"][0]["id"] == photo_id(query)


def _stats_and_listing(stack: Stack) -> tuple[dict, list[str]] | None:
    try:
        return stack.stats(), sorted(stack.listing())
    except requests.RequestException:
        return None


def _search_done(stack: Stack, query: Path) -> dict | None:
    try:
        job = stack.search(query, methods="vgg16")
    except (requests.RequestException, AssertionError):
        return None
    return job if job["status"] == "done" else None


def test_two_vgg16_search_replicas_both_answer(stack, indexed):
    started = time.monotonic()
    stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "vgg16=2", "vgg16")
    assert len(stack.containers("vgg16")) == 2
    stack.wait_healthy(["vgg16"], timeout=600)
    stack.timings["second vgg16 replica healthy (s)"] = time.monotonic() - started
    photos = catalogue_photos()
    answered_by: dict[str, int] = {}
    for n in range(20):
        query = photos[n]
        job = stack.search(query, methods="vgg16")
        vgg16 = job["methods"]["vgg16"]
        assert vgg16["results"][0]["id"] == photo_id(query), vgg16["results"][:3]
        answered_by[vgg16["worker"]] = answered_by.get(vgg16["worker"], 0) + 1
        if len(answered_by) == 2 and n >= 5:
            break
    assert len(answered_by) == 2, f"searches answered by {answered_by}"


def test_flower_answers_on_loopback_only_and_only_with_basic_auth(stack):
    stack.env["FLOWER_BASIC_AUTH"] = FLOWER_AUTH
    stack.compose("up", "-d", "--no-deps", "flower")
    stack.wait_healthy(["flower"], timeout=120)
    (flower,) = stack.containers("flower")
    bindings = stack.inspect(flower)["HostConfig"]["PortBindings"]["5555/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    url = f"http://127.0.0.1:{stack.flower_port}/"
    assert requests.get(url, timeout=10).status_code == 401
    token = base64.b64encode(FLOWER_AUTH.encode()).decode()
    answer = requests.get(url, headers={"Authorization": f"Basic {token}"}, timeout=10)
    assert answer.status_code == 200
