"""Images out of Redis, through the real system: the gateway writes them to the blob store,
index workers that reach only Redis embed them from the upload's staged copies, deletes
keep what another id still shares, and Redis holds a few kilobytes per image."""

from pathlib import Path

import pytest
import redis
import requests
from celery import Celery

from bench.redis_bytes import write_legacy_entry
from deploy.launcher import Processes
from shared import keys, names
from shared.blobs import FileBlobStore
from shared.catalogue import Catalogue, ImageMeta
from shared.images import canonicalize
from tests.conftest import fresh_database
from tests.integration.conftest import Service, base_env, stopping
from tests.integration.system import start_system

pytestmark = pytest.mark.integration


LEGACY_ID = "legacy-lemon"


@pytest.fixture(scope="module")
def remote_workers(redis_url, sample_images, tmp_path_factory):
    """A gateway with the blob store, and workers whose blob store is an empty directory:
    as on another host that reaches only Redis. Redis holds an entry as the release before
    the blob store wrote it (its JPEGs in Redis), which the gateway migrates as it starts."""
    log_dir = tmp_path_factory.mktemp("logs")
    gateway_env = base_env(fresh_database(redis_url), INDEX_CHUNK_SIZE="4")
    worker_env = {**gateway_env, "BLOB_STORE_DIR": str(tmp_path_factory.mktemp("elsewhere"))}
    image = canonicalize(sample_images["Lemon"][1].read_bytes(), max_side=512, max_pixels=10**8)
    meta = ImageMeta(LEGACY_ID, image.content_hash, image.width, image.height, None, "JPEG", 1e9)
    pipe = redis.Redis.from_url(gateway_env["REDIS_URL"]).pipeline()
    write_legacy_entry(pipe, meta, image.jpeg, image.thumbnail)
    pipe.execute()
    procs = Processes()
    with stopping(log_dir, procs):
        service = start_system(procs, gateway_env, log_dir, worker_env=worker_env)
        yield service, Path(worker_env["BLOB_STORE_DIR"]), image


def catalogue_of(service: Service) -> tuple[redis.Redis, Catalogue]:
    client = redis.Redis.from_url(service.env["REDIS_URL"])
    return client, Catalogue(client, FileBlobStore(service.env["BLOB_STORE_DIR"]))


def test_workers_that_reach_only_redis_index_uploads_and_shared_blobs_survive_deletes(
    remote_workers, sample_images
):
    service, elsewhere, legacy = remote_workers
    client, catalogue = catalogue_of(service)
    lemon, garlic = sample_images["Lemon"][0], sample_images["Garlic"][0]
    paths = [lemon, lemon, garlic, *sample_images["Anjou"][:3]]
    ids = ["lemon-a", "lemon-b", "garlic", "anjou-0", "anjou-1", "anjou-2"]
    body = service.add_images(paths, ids)
    job = service.wait(body["job_id"], timeout=300)
    assert job["status"] == "done", job
    assert job["methods"]["vgg16"]["embedded"] == 6
    assert list(elsewhere.iterdir()) == []  # the workers never needed a blob
    # The last task deleted the staged copies; Redis holds no JPEG of the catalogue.
    assert not client.exists(keys.staged_images(body["job_id"]))
    assert client.keys("catalog:image:*") == client.keys("catalog:thumb:*") == []

    # The entry the gateway found in Redis at its start is served from the blob store now.
    moved = requests.get(f"{service.api}/images/{LEGACY_ID}/thumbnail", timeout=10)
    assert moved.status_code == 200 and moved.content == legacy.thumbnail
    assert catalogue.get_image(LEGACY_ID) == legacy.jpeg

    stored = requests.get(f"{service.api}/images/lemon-a/content", timeout=10)
    assert stored.status_code == 200 and stored.headers["Content-Type"] == "image/jpeg"
    canonical = canonicalize(lemon.read_bytes(), max_side=512, max_pixels=50_000_000)
    assert stored.content == canonical.jpeg == catalogue.get_image("lemon-b")
    meta = catalogue.get_meta("lemon-a")
    assert meta.blob_names == catalogue.get_meta("lemon-b").blob_names  # one copy, shared
    blobs = FileBlobStore(service.env["BLOB_STORE_DIR"])

    # Deleting one of the two ids keeps the bytes the other still names.
    assert requests.delete(f"{service.api}/images/lemon-a", headers=service.auth).ok
    thumb = requests.get(f"{service.api}/images/lemon-b/thumbnail", timeout=10)
    assert thumb.status_code == 200 and thumb.content == canonical.thumbnail
    hits = service.search_and_wait(lemon, k=2, methods="vgg16")["methods"]["vgg16"]["results"]
    assert hits[0]["id"] == "lemon-b"
    assert requests.delete(f"{service.api}/images/lemon-b", headers=service.auth).ok
    assert not any(blobs.exists(name) for name in meta.blob_names)
    assert requests.get(f"{service.api}/images/lemon-b/content", timeout=10).status_code == 404


def test_an_index_task_whose_staged_images_expired_fails_saying_so(remote_workers, sample_images):
    """A task delivered after its upload's staged copies expired, on a worker without the
    blob store: the chunk fails with the reason, nothing is embedded silently or wrongly."""
    service, _, _ = remote_workers
    client, catalogue = catalogue_of(service)
    path = sample_images["Garlic"][1]
    image = canonicalize(path.read_bytes(), max_side=512, max_pixels=50_000_000)
    catalogue.put("late-garlic", image, filename=path.name, metadata={})  # in the store, unstaged
    app = Celery(broker=service.env["REDIS_URL"], backend=service.env["REDIS_URL"])
    queue = names.queue_name("vgg16", names.INDEX)
    result = app.send_task(
        names.EMBED_BATCH_TASKS["vgg16"], args=["expired-job", ["late-garlic"]], queue=queue
    )
    with pytest.raises(Exception, match="staged copies .* expired .* upload them again"):
        result.get(timeout=120)
    assert not client.hexists("index:vgg16:vgg16-imagenet-pool512:vectors", "late-garlic")
