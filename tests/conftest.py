"""Fixtures every test tier shares: a private Redis server per test session."""

import itertools
from pathlib import Path

import pytest
import redis

from deploy.launcher import Processes, start_redis
from shared.blobs import FileBlobStore

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "grocery-store" / "images"
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A redis-server of the tests' own on a free port (append-only), stopped at the end."""
    procs = Processes()
    url = start_redis(procs, tmp_path_factory.mktemp("redis"))
    yield url
    procs.stop()


def fresh_database(redis_url: str) -> str:
    """The URL of an empty database of the session's Redis that no other test uses."""
    url = redis_url.rsplit("/", 1)[0] + f"/{next(_databases) % 64}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(autouse=True)
def blob_store_dir(tmp_path_factory, monkeypatch) -> Path:
    """A blob store of each test's own: BLOB_STORE_DIR for the settings a test builds.

    Blobs are shared by content, and their references are counted per Redis database, so
    two tests sharing a directory could delete each other's."""
    directory = tmp_path_factory.mktemp("blobs")
    monkeypatch.setenv("BLOB_STORE_DIR", str(directory))
    return directory


@pytest.fixture
def blobs(blob_store_dir) -> FileBlobStore:
    return FileBlobStore(blob_store_dir)


@pytest.fixture
def redis_client(redis_url) -> redis.Redis:
    """A client on a fresh database of the session's Redis, so tests never see each other."""
    client = redis.Redis.from_url(fresh_database(redis_url))
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def sample_images() -> dict[str, list[Path]]:
    """The committed sample catalogue: product name -> photo paths."""
    by_product: dict[str, list[Path]] = {}
    for path in sorted(SAMPLES.rglob("*.jpg")):
        by_product.setdefault(path.parent.name, []).append(path)
    return by_product
