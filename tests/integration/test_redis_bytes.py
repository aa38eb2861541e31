"""Redis bytes per image through the real service agree with bench.redis_bytes."""

import time

import pytest
import redis

from bench.redis_bytes import LIMIT_PER_IMAGE, key_families, measure
from shared import keys

pytestmark = pytest.mark.integration


def test_redis_bytes_per_image_in_the_service_agree_with_the_bench(service, sample_images):
    """The sample catalogue uploaded, both methods indexed (one training): MEMORY USAGE of
    the catalogue's and indexes' keys per image is what bench.redis_bytes finds for as many
    images (small encodings included), and within the budget."""
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
    service_per_image = sum(families.values()) / count
    bench = measure(count, "after")
    print(
        f"\n{count} images through the service: {service_per_image:,.0f} bytes per image "
        f"(MEMORY USAGE), the bench {bench['memory_usage_per_image']:,}"
    )
    assert service_per_image == pytest.approx(bench["memory_usage_per_image"], rel=0.1)
    assert service_per_image <= LIMIT_PER_IMAGE
