"""Access and secrets through real processes: API key, closed reads, rate limit, placeholder
secrets, a Redis password, JSON-only messages, server-made names, non-root containers."""

import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests

from deploy.launcher import (
    Processes,
    free_port,
    start_gateway,
    start_redis,
    start_worker,
    wait_until,
)
from shared.celery_app import make_celery
from shared.images import default_image_id
from shared.settings import CommonSettings
from tests.conftest import fresh_database
from tests.helpers.images import png
from tests.integration.conftest import ROOT, base_env, stopping
from tests.integration.system import answers, kill, start_extra_gateway, start_system

pytestmark = pytest.mark.integration

RATE_LIMIT = 5


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 15, error
    return error


# Writes need the key; reads are open unless READS_REQUIRE_KEY closes them
def write_requests(api: str) -> dict:
    return {
        "add": lambda h: requests.post(
            f"{api}/images", files={"file": ("a.png", png())}, headers=h, timeout=30
        ),
        "delete": lambda h: requests.delete(f"{api}/images/nope", headers=h, timeout=10),
        "train": lambda h: requests.post(
            f"{api}/models/autoencoder/trainings", json={"epochs": 0}, headers=h, timeout=10
        ),
        "activate": lambda h: requests.post(
            f"{api}/models/autoencoder/versions/ae-nope/activate", headers=h, timeout=10
        ),
    }


@pytest.mark.parametrize("write", ["add", "delete", "train", "activate"])
def test_every_write_needs_the_api_key(service, write):
    call = write_requests(service.api)[write]
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": service.api_key + "x"}):
        assert_error(call(headers), 401, "unauthorized")
    # With the key the request gets past the check, and fails, if at all, for its own
    # reason (epochs=0 is refused before a training would start).
    expected = {"add": 202, "delete": 404, "train": 400, "activate": 404}[write]
    assert call(service.auth).status_code == expected


def read_requests(api: str) -> dict:
    return {
        "stats": lambda h: requests.get(f"{api}/stats", headers=h, timeout=10),
        "list": lambda h: requests.get(f"{api}/images", headers=h, timeout=10),
        "image": lambda h: requests.get(f"{api}/images/nope", headers=h, timeout=10),
        "thumbnail": lambda h: requests.get(f"{api}/images/nope/thumbnail", headers=h, timeout=10),
        "job": lambda h: requests.get(f"{api}/jobs/nope", headers=h, timeout=10),
        "models": lambda h: requests.get(f"{api}/models/autoencoder", headers=h, timeout=10),
        "search": lambda h: requests.post(
            f"{api}/searches", files={"file": ("q.png", png())}, headers=h, timeout=30
        ),
    }


def test_reads_are_open_by_default(service):
    for name, call in read_requests(service.api).items():
        assert call({}).status_code in (200, 202, 404), name
    for path in ("stats", "health"):
        assert requests.get(f"{service.api}/{path}", timeout=10).status_code == 200, path


def test_reads_closed_by_setting_need_the_key(service, tmp_path):
    closed, process = start_extra_gateway(service, tmp_path, READS_REQUIRE_KEY="true")
    try:
        for name, call in read_requests(closed.api).items():
            assert_error(call({}), 401, "unauthorized")
            assert_error(call({"X-API-Key": "wrong"}), 401, "unauthorized")
            assert call(closed.auth).status_code in (200, 202, 404), name
        # Health stays open, as a bare verdict: orchestrators and load balancers probe it
        # without a key; worker names (hosts, process ids) are for clients with the key.
        anonymous = requests.get(f"{closed.api}/health", timeout=10)
        assert anonymous.status_code == 200
        assert set(anonymous.json()) == {"status"}
        detailed = requests.get(f"{closed.api}/health", headers=closed.auth, timeout=10).json()
        assert "queues" in detailed
        # Metrics name hosts and queues: the key, as X-API-Key or as Prometheus' bearer token.
        metrics = f"{closed.base_url}/metrics"
        assert_error(requests.get(metrics, timeout=10), 401, "unauthorized")
        assert requests.get(metrics, headers=closed.auth, timeout=10).status_code == 200
        bearer = {"Authorization": f"Bearer {closed.api_key}"}
        assert requests.get(metrics, headers=bearer, timeout=10).status_code == 200
        wrong_bearer = {"Authorization": "Bearer wrong"}
        assert_error(requests.get(metrics, headers=wrong_bearer, timeout=10), 401, "unauthorized")
    finally:
        kill(process, signal.SIGTERM)


def test_images_are_cached_privately_when_reads_need_the_key(service, tmp_path):
    """A shared cache may keep images everyone may read, never ones behind the key; and no
    browser sniffs an image response into something else."""
    response = requests.post(
        f"{service.api}/images",
        files={"file": ("c.png", png(7))},
        data={"id": "cached"},
        headers=service.auth,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    closed, process = start_extra_gateway(service, tmp_path, READS_REQUIRE_KEY="true")
    try:
        for gateway, headers, cache in (
            (service, {}, "public, max-age=300"),
            (closed, closed.auth, "private, no-store"),
        ):
            for part in ("content", "thumbnail"):
                image = requests.get(
                    f"{gateway.api}/images/cached/{part}", headers=headers, timeout=10
                )
                assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
                assert image.headers["Cache-Control"] == cache, (part, image.headers)
                assert image.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        kill(process, signal.SIGTERM)


# Rate limit
def wait_for_a_fresh_minute_if_needed(margin: float = 10) -> None:
    """The limit counts per calendar minute: do not start a burst right before it turns."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.2)


def test_rate_limit_answers_429_per_key_and_per_address(service, tmp_path):
    limited, process = start_extra_gateway(service, tmp_path, RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT))
    stats = f"{limited.api}/stats"
    try:
        wait_for_a_fresh_minute_if_needed()
        # Without the key: counted per client address.
        for _ in range(RATE_LIMIT):
            assert requests.get(stats, timeout=10).status_code == 200
        refused = requests.get(stats, timeout=10)
        error = assert_error(refused, 429, "rate_limited")
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 60 and f"{retry_after} s" in error["message"]
        # Made-up keys do not buy a fresh budget: they count against the address too.
        assert_error(
            requests.get(stats, headers={"X-API-Key": "made-up"}, timeout=10), 429, "rate_limited"
        )
        # The API key has a budget of its own, writes included.
        for _ in range(RATE_LIMIT):
            assert requests.get(stats, headers=limited.auth, timeout=10).status_code == 200
        write = requests.delete(f"{limited.api}/images/nope", headers=limited.auth, timeout=10)
        assert_error(write, 429, "rate_limited")
        # Health is never limited.
        assert requests.get(f"{limited.api}/health", timeout=10).status_code == 200

        # The counters live in Redis, keyed as shared/keys.py says, with no secret in them.
        client = redis.Redis.from_url(service.env["REDIS_URL"])
        counters = {k.decode() for k in client.scan_iter("ratelimit:*")}
        assert any(k.startswith("ratelimit:addr-127.0.0.1:") for k in counters), counters
        assert any(re.match(r"ratelimit:key-[0-9a-f]{16}:\d+$", k) for k in counters), counters
        assert not any(service.api_key in k for k in counters)
        assert all(0 < client.ttl(k) <= 120 for k in counters)

        # A fixed window: the next minute starts a new count.
        time.sleep(retry_after + 0.5)
        assert requests.get(stats, timeout=10).status_code == 200
    finally:
        kill(process, signal.SIGTERM)


def test_no_rate_limit_by_default(service):
    for _ in range(30):
        assert requests.get(f"{service.api}/stats", timeout=10).status_code == 200


# Placeholder secrets stop a service outside development
REAL_KEY = "kq3-real-looking-key-7f2c9e1d"


def refused_start(kind: str, env: dict[str, str], log_dir: Path, timeout: float = 90):
    """Start a process that must refuse to start; its exit code and its log."""
    procs = Processes()
    if kind == "gateway":
        process, log = start_gateway(procs, env, free_port(), log_dir), log_dir / "gateway.log"
    else:
        process = start_worker(procs, "vgg16", ["search"], env, log_dir, name="refused")
        log = log_dir / "refused.log"
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        procs.stop()
        pytest.fail(f"the {kind} started with a placeholder secret: {log.read_text()[-2000:]}")
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        ("gateway", {"API_KEY": "changeme"}, "API_KEY is a placeholder"),
        ("gateway", {"API_KEY": "  Secret "}, "API_KEY is a placeholder"),
        ("gateway", {"API_KEY": ""}, "API_KEY is a placeholder"),
        ("gateway", {"API_KEY": None}, "API_KEY must be set in production"),
        ("gateway", {"REDIS_URL": "redis://:changeme@127.0.0.1:9/0"}, "placeholder password"),
        ("worker", {"REDIS_URL": "redis://:changeme@127.0.0.1:9/0"}, "placeholder password"),
    ],
    ids=["changeme", "secret", "empty", "no-key", "gateway-redis", "worker-redis"],
)
def test_placeholder_secrets_stop_production_services(
    redis_url, tmp_path, kind, overrides, message
):
    env = base_env(redis_url, ENVIRONMENT="production", API_KEY=REAL_KEY)
    for name, value in overrides.items():
        if value is None:
            del env[name]
        else:
            env[name] = value
    code, log = refused_start(kind, env, tmp_path)
    assert code != 0
    assert message in log, log[-2000:]
    # The refusal names the setting but never prints the secrets it was given.
    assert REAL_KEY[-8:] not in log and "changeme" not in log.replace("API_KEY", ""), log


def test_a_real_key_in_production_starts(redis_url, tmp_path):
    env = base_env(fresh_database(redis_url), ENVIRONMENT="production", API_KEY=REAL_KEY)
    procs = Processes()
    port = free_port()
    try:
        start_gateway(procs, env, port, tmp_path)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}"), 60, "the gateway", procs)
        stats = requests.get(f"http://127.0.0.1:{port}/api/v1/stats", timeout=10)
        assert stats.status_code == 200
    finally:
        procs.stop()


# A Redis password, end to end
@pytest.fixture(scope="module")
def password_service(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("password-logs")
    redis_procs, procs = Processes(), Processes()
    password = secrets.token_hex(16)
    with stopping(log_dir, procs, redis_procs):
        url = start_redis(redis_procs, tmp_path_factory.mktemp("password-redis"), password=password)
        assert f":{password}@" in url
        yield start_system(procs, base_env(url), log_dir), url, password


def test_services_work_with_a_redis_password(password_service, sample_images):
    service, url, password = password_service
    without = redis.Redis.from_url(url.replace(f":{password}@", ""), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        without.get("catalog:ids")
    wrong = redis.Redis.from_url(url.replace(password, "wrong"), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()

    chosen = {f"{product}-0": sample_images[product][0] for product in ("Lemon", "Garlic", "Plum")}
    job = service.wait(service.add_images(list(chosen.values()), ids=list(chosen))["job_id"])
    assert job["status"] == "done" and job["methods"]["vgg16"]["embedded"] == 3, job
    found = service.search_and_wait(chosen["Garlic-0"], k=3)
    assert found["methods"]["vgg16"]["results"][0]["id"] == "Garlic-0"
    assert requests.get(f"{service.api}/health", timeout=10).json()["redis"] == "ok"
    logs = "".join(p.read_text(errors="replace") for p in service.log_dir.glob("*.log"))
    assert password not in logs, "the Redis password was written to a log"


# JSON only on the wire
class CreatesAFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_celery_accepts_json_only():
    for main in ("gateway", "vgg16", "autoencoder"):
        conf = make_celery(CommonSettings(), main).conf
        assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
        assert (conf.task_serializer, conf.result_serializer) == ("json", "json")


def test_a_pickled_message_is_refused_by_a_real_worker(service, tmp_path):
    """A message that would run code when unpickled is refused unread, and the worker lives."""
    marker = tmp_path / "unpickled"
    attacker = make_celery(CommonSettings(redis_url=service.env["REDIS_URL"]), "attacker")
    attacker.conf.accept_content = ["json", "pickle"]
    logs = sorted(service.log_dir.glob("vgg16-search*.log"))
    assert logs, "no vgg16 search worker log"
    before = logs[0].read_text(errors="replace").count("Refusing to deserialize")
    attacker.send_task(
        "vgg16.search",
        args=[CreatesAFileWhenUnpickled(marker), "query:x", 3],
        queue="vgg16.search",
        serializer="pickle",
    )
    deadline = time.monotonic() + 60
    while logs[0].read_text(errors="replace").count("Refusing to deserialize") == before:
        assert time.monotonic() < deadline, "the worker never looked at the pickled message"
        time.sleep(0.5)
    assert not marker.exists(), "the worker unpickled the message"
    service.procs.check_alive()
    client = redis.Redis.from_url(service.env["REDIS_URL"])
    assert client.llen("vgg16.search") == 0, "the refused message is still queued"
    response = requests.post(
        f"{service.api}/searches", files={"file": ("q.png", png(1))}, timeout=30
    )
    assert service.wait(response.json()["job_id"], timeout=120)["status"] == "done"


def test_no_pickle_in_the_code():
    pattern = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib)\b|allow_pickle=True", re.M
    )
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("shared", "services", "client", "deploy")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text(errors="replace"))
    ]
    assert offenders == []


# Names the server keeps are made by the server
def test_stored_names_are_made_by_the_server(service):
    data = png(21)
    evil_name = "../../../../tmp/owned.sh"
    response = requests.post(
        f"{service.api}/images",
        files={"file": (evil_name, data)},
        headers=service.auth,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    image_id = response.json()["images"][0]["id"]
    assert image_id == default_image_id(data) and re.fullmatch(r"[0-9a-f]{32}", image_id)
    client = redis.Redis.from_url(service.env["REDIS_URL"])
    assert not [k for k in client.scan_iter("*owned*")], "a key was named after the client"
    assert not Path("/tmp/owned.sh").exists()
    described = requests.get(f"{service.api}/images/{image_id}", timeout=10).json()
    assert described["filename"] == evil_name  # kept as a label only
    assert described["image_url"] == f"/api/v1/images/{image_id}/content"


# Containers run as a non-root user
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per line; comments and indented continuations left out."""
    instructions = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line[0].isspace():
            continue
        op, _, argument = line.strip().partition(" ")
        instructions.append((op.upper(), argument.strip()))
    return instructions


def compose_dockerfiles() -> list[Path]:
    """The Dockerfiles of the images docker-compose.yml runs (not the local base images)."""
    compose = (ROOT / "docker-compose.yml").read_text()
    return sorted({ROOT / m for m in re.findall(r"dockerfile:\s*(\S+)", compose)})


# Users that the base images bring: the official redis image and Debian's redis-server
# package (deploy/local-redis.Dockerfile) both create "redis".
BASE_IMAGE_USERS = frozenset({"redis"})


def test_compose_builds_every_image_it_runs_from_this_repository():
    assert [p.name for p in compose_dockerfiles()] == [
        "flower.Dockerfile", "gateway.Dockerfile", "redis.Dockerfile", "worker.Dockerfile"
    ]  # fmt: skip


@pytest.mark.parametrize("dockerfile", compose_dockerfiles(), ids=lambda p: p.name)
def test_containers_run_as_a_non_root_user(dockerfile):
    instructions = dockerfile_instructions(dockerfile)
    users = [n for n, (op, _) in enumerate(instructions) if op == "USER"]
    assert users, f"{dockerfile.name} never sets USER: its process would run as root"
    user = instructions[users[-1]][1].split(":")[0]
    assert user not in ("root", "0"), user
    created = [arg for op, arg in instructions[: users[-1]] if op == "RUN" and "useradd" in arg]
    assert user in BASE_IMAGE_USERS or any(
        re.search(rf"\b{re.escape(user)}\b", arg) for arg in created
    ), "user not created"
    assert "CMD" in [op for op, _ in instructions[users[-1] :]], "CMD must come after USER"


def test_compose_does_not_give_root_back():
    compose = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"^\s*user:\s*[\"']?(root|0)\b", compose, re.M)
    assert not re.search(r"^\s*privileged:\s*true", compose, re.M)
