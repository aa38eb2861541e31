"""The whole system for integration tests: real Redis, real Celery workers, real gateway."""

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from deploy.launcher import (
    DEFAULT_WORKERS,
    Processes,
    free_port,
    gateway_healthy,
    start_gateway,
    start_worker,
    wait_for_job,
    wait_until,
)
from tests.conftest import fresh_database

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "integration-test-key"


@dataclass
class Service:
    base_url: str
    api_key: str
    env: dict[str, str]
    procs: Processes
    log_dir: Path

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/v1"

    @property
    def auth(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def add_images(self, paths: list[Path], ids: list[str] | None = None) -> dict:
        files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
        data = [("id", i) for i in ids] if ids else []
        response = requests.post(
            f"{self.api}/images", files=files, data=data, headers=self.auth, timeout=60
        )
        assert response.status_code == 202, response.text
        return response.json()

    def search(self, image: Path | bytes, k: int = 5, methods: str | None = None) -> str:
        """Send a search (a photo's path, or an image's bytes); its job id."""
        data = {"k": str(k)} | ({"methods": methods} if methods else {})
        name, content = (
            (image.name, image.read_bytes()) if isinstance(image, Path) else ("query", image)
        )
        response = requests.post(
            f"{self.api}/searches",
            files={"file": (name, content)},
            data=data,
            timeout=30,
        )
        assert response.status_code == 202, response.text
        assert response.headers["Location"].endswith(response.json()["job_id"])
        return response.json()["job_id"]

    def train(self, epochs: int, **options) -> str:
        """Start an autoencoder training (options: patience, always_activate); its job id."""
        response = requests.post(
            f"{self.api}/models/autoencoder/trainings",
            json={"epochs": epochs, **options},
            headers=self.auth,
            timeout=10,
        )
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def wait(self, job_id: str, timeout: float = 300) -> dict:
        return wait_for_job(self.base_url, job_id, timeout)

    def search_and_wait(self, path: Path, **kwargs) -> dict:
        job = self.wait(self.search(path, **kwargs))
        assert job["status"] == "done", job
        return job


def base_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment the test systems give their processes, plus overrides."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        # Each system's own (blobs are counted per Redis database): see blob_store_dir.
        BLOB_STORE_DIR=tempfile.mkdtemp(prefix="blobs-"),
        API_KEY=API_KEY,
        ENVIRONMENT="test",
        PYTHONPATH=str(ROOT),
        VGG16_WEIGHTS_DIR=str(ROOT / "var" / "weights"),
        # A small autoencoder so a training in the tests takes seconds, not minutes.
        AUTOENCODER_INPUT_SIZE="64",
        AUTOENCODER_EPOCHS="4",
        AUTOENCODER_BATCH_SIZE="16",
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def service(request, redis_url, tmp_path_factory) -> Service:
    """The system on an empty Redis database of its own, for one test module; a module's
    SERVICE_ENV (a dict) adds settings to its environment."""
    log_dir = tmp_path_factory.mktemp("logs")
    env = base_env(fresh_database(redis_url), **getattr(request.module, "SERVICE_ENV", {}))
    procs = Processes()
    port = free_port()
    with stopping(log_dir, procs):
        for method, roles in DEFAULT_WORKERS:
            start_worker(procs, method, roles, env, log_dir)
        start_gateway(procs, env, port, log_dir)
        base_url = f"http://127.0.0.1:{port}"
        queues = {f"{m}.{r}" for m, roles in DEFAULT_WORKERS for r in roles}
        wait_until(lambda: gateway_healthy(base_url, queues), 240, "workers to be ready", procs)
        yield Service(base_url, API_KEY, env, procs, log_dir)


def dump_logs(log_dir: Path, tail: int = 4000) -> None:
    for log in sorted(log_dir.glob("*.log")):
        sys.stderr.write(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}\n")


@contextlib.contextmanager
def stopping(log_dir: Path, *groups: Processes) -> Iterator[None]:
    """Stop the process groups at the end, in order; if the body failed, print the services'
    logs first (a system that did not start says why there)."""
    try:
        yield
    except Exception:
        dump_logs(log_dir)
        raise
    finally:
        for procs in groups:
            procs.stop()
