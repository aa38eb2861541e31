"""Redis bytes per image through the real service agree with bench.redis_bytes."""

import time

import pytest
import redis

from bench.redis_bytes import LIMIT_PER_IMAGE, key_families, measure
from shared import keys

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def per_image(service, sample_images) -> dict[str, float]:
    """The sample catalogue uploaded and both methods indexed (one training): MEMORY USAGE
    of the catalogue's and indexes' keys per image, in the service and in the bench for as
    many images (small encodings included)."""
    paths = [p for product in sorted(sample_images) for p in sample_images[product]]
    body = service.add_images(paths)
    assert service.wait(body["job_id"], timeout=600)["status"] == "done"
    train = service.wait(service.train(2), timeout=900)
    assert train["status"] == "done", train
    client = redis.Redis.from_url(service.env["REDIS_URL"])
    deadline = time.monotonic() + 60
    while client.keys("staged:*") and time.monotonic() < deadline:
        time.sleep(0.5)  # the last index task deletes them
    count = client.zcard(keys.CATALOGUE_IDS)
    assert count == len(paths)
    families = key_families(client)
    assert "canonical JPEG" not in families and "thumbnail" not in families
    figures = {
        "service": sum(families.values()) / count,
        "bench": measure(count, "after")["memory_usage_per_image"],
    }
    print(f"\n{count} images, bytes per image (MEMORY USAGE): {figures}")
    return figures


def test_the_service_stores_what_the_bench_measures(per_image):
    assert per_image["service"] == pytest.approx(per_image["bench"], rel=0.1)


def test_an_image_takes_at_most_4_kb_of_redis(per_image):
    assert per_image["service"] <= LIMIT_PER_IMAGE
