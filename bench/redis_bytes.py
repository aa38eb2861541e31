"""Redis bytes per catalogue image, in the layouts of three releases.

``python -m bench.redis_bytes [--images 10000]`` (``make bench-redis-bytes``) stores that
many images on a private redis-server, three times, and reports what Redis holds per image
with both methods indexed:

- **before**: the layout of the release before the blob store (canonical JPEG and
  thumbnail in Redis beside the metadata, ``write_legacy_entry``; float32 vectors);
- **float32**: the JPEGs in a blob store in a temporary directory, metadata in Redis
  (``Catalogue.put``), vectors still bare float32 (the release before float16);
- **after**: as the service stores images now: the blob store, and vectors as
  ``vector_to_bytes`` encodes them (float16 and a tag byte);
- **cluster**: the same on a private 3-master Redis Cluster (REDIS_CLUSTER_NODES), whose
  key layout splits the catalogue into partitions and counts each blob's references in a
  key of its own (shared/keys.py); used_memory summed over the masters.

Both through the real index write script (``IndexStore.add_vectors``, in chunks of 64 as
the index workers write) with synthetic vectors of the real sizes: vgg16 512 float32, the
autoencoder's AUTOENCODER_LATENT_DIM (128 by default) float32. The pictures are the sample
catalogue's photos, canonicalised as uploads are, given out in turn; each image's JPEGs
carry its number after their end marker (still the same pictures to a decoder) so that,
as in a real catalogue, every image has blobs of its own to count references to. Figures:
the growth of ``INFO memory`` used_memory, and ``MEMORY USAGE`` summed per key family
(``key_families``, which tests/integration/test_redis_bytes.py reads from a running service).
Writes var/bench/redis_bytes.json and .md.
"""

import argparse
import dataclasses
import json
import re
import tempfile
from pathlib import Path
from typing import Final

import numpy as np
import redis

from deploy.launcher import Processes, start_redis
from deploy.redis_cluster import start_redis_cluster
from services.autoencoder.settings import AutoencoderSettings
from shared import keys
from shared.blobs import FileBlobStore
from shared.catalogue import Catalogue, ImageMeta
from shared.data_plane import is_cluster
from shared.images import CanonicalImage, canonicalize
from shared.index_store import IndexStore
from shared.runtime.vector_index import vector_to_bytes
from shared.settings import CommonSettings, redis_client

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "grocery-store" / "images"
VGG16 = ("vgg16", "vgg16-imagenet-pool512", 512)
CHUNK: Final = 64  # images per index task (INDEX_CHUNK_SIZE)
LIMIT_PER_IMAGE: Final = 4096
LAYOUTS: Final = ("before", "float32", "after", "cluster")

# Key families: what each Redis key of the catalogue and its indexes is part of, in the
# layout of one Redis or of a cluster ("catalog:{part-3}:meta:...", "blob:{<name>}:refs").
_PARTITION = r"(\{part-\d+\}:)?"
FAMILIES: Final = {
    re.compile(rf"catalog:{_PARTITION}meta:"): "metadata",
    re.compile(rf"catalog:{_PARTITION}image:"): "canonical JPEG",
    re.compile(rf"catalog:{_PARTITION}thumb:"): "thumbnail",
    re.compile(rf"catalog:{_PARTITION}ids$"): "id list",
    re.compile(r"blob:(refs|\{[0-9a-f]+\}:refs)$"): "blob references",
    re.compile(r"index:"): "vectors and logs",
}


def write_legacy_entry(
    pipe: redis.client.Pipeline, meta: ImageMeta, jpeg: bytes, thumbnail: bytes
) -> None:
    """Queue a catalogue entry as the release before the blob store wrote it."""
    pipe.set(keys.catalogue_image(meta.id), jpeg)
    pipe.set(keys.catalogue_thumb(meta.id), thumbnail)
    pipe.set(keys.catalogue_meta(meta.id), meta.portable_json())
    pipe.zadd(keys.CATALOGUE_IDS, {meta.id: meta.added_at})


def sample_pictures() -> list[tuple[str, CanonicalImage]]:
    """(file name, canonical image) of every sample photo, as an upload stores it."""
    return [
        (
            str(path.relative_to(SAMPLES)),
            canonicalize(path.read_bytes(), max_side=512, max_pixels=50_000_000),
        )
        for path in sorted(SAMPLES.rglob("*.jpg"))
    ]


def family(key: str) -> str | None:
    for pattern, name in FAMILIES.items():
        if pattern.match(key):
            return name
    return None


def key_families(client: redis.Redis) -> dict[str, int]:
    """MEMORY USAGE (every element counted: SAMPLES 0) summed per key family."""
    sizes: dict[str, int] = {}
    for raw in client.scan_iter(count=1000):
        name = family(raw.decode())
        if name:
            sizes[name] = sizes.get(name, 0) + int(client.memory_usage(raw, samples=0) or 0)
    return sizes


def store_images(client: redis.Redis, count: int, layout: str, blob_root: Path) -> None:
    pictures = sample_pictures()
    catalogue = Catalogue(client, FileBlobStore(blob_root))
    store = IndexStore(client)
    rng = np.random.default_rng(0)
    latent = AutoencoderSettings().autoencoder_latent_dim
    methods = [VGG16, ("autoencoder", "ae-20261207T000000Z-bench000", latent)]
    for start in range(0, count, CHUNK):
        ids = [f"{n:032x}" for n in range(start, min(start + CHUNK, count))]
        hashes: dict[str, str] = {}
        pipe = client.pipeline(transaction=False)
        for n, image_id in enumerate(ids, start=start):
            filename, photo = pictures[n % len(pictures)]
            tag = n.to_bytes(4, "big")  # after the JPEG's EOI marker: other bytes, same picture
            image = dataclasses.replace(
                photo, jpeg=photo.jpeg + tag, thumbnail=photo.thumbnail + tag
            )
            hashes[image_id] = image.content_hash
            if layout == "before":
                meta = ImageMeta(
                    image_id, image.content_hash, image.width, image.height, filename,
                    image.source_format, 1.8e9 + n,
                )  # fmt: skip
                write_legacy_entry(pipe, meta, image.jpeg, image.thumbnail)
            else:
                catalogue.put(image_id, image, filename=filename, metadata={})
        pipe.execute()
        for method, version, dim in methods:
            rows = rng.normal(size=(len(ids), dim)).astype("<f4")
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            float16 = layout in ("after", "cluster")
            encode = vector_to_bytes if float16 else np.ndarray.tobytes
            vectors = {i: encode(row) for i, row in zip(ids, rows, strict=True)}
            store.add_vectors(method, version, vectors, made_from=hashes)


def used_memory(client: redis.Redis) -> int:
    """INFO memory's used_memory (on a cluster: summed over its masters)."""
    if is_cluster(client):
        by_master = client.info("memory", target_nodes=client.PRIMARIES)
        return sum(int(info["used_memory"]) for info in by_master.values())
    return int(client.info("memory")["used_memory"])


def measure(count: int, layout: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="redis-bytes-") as scratch:
        procs = Processes()
        try:
            if layout == "cluster":
                nodes = start_redis_cluster(procs, Path(scratch) / "cluster")
                client = redis_client(CommonSettings(redis_cluster_nodes=nodes.nodes))
            else:
                client = redis.Redis.from_url(start_redis(procs, Path(scratch) / "redis"))
            empty = used_memory(client)
            store_images(client, count, layout, Path(scratch) / "blobs")
            used = used_memory(client) - empty
            families = key_families(client)
        finally:
            procs.stop()
            keys.use_cluster_layout(False)
    return {
        "images": count,
        "used_memory_per_image": round(used / count),
        "memory_usage_per_image": round(sum(families.values()) / count),
        "per_image_by_family": {name: round(size / count) for name, size in families.items()},
    }


def report(results: dict[str, dict]) -> str:
    names = sorted({n for r in results.values() for n in r["per_image_by_family"]})
    lines = [
        "| bytes per image in Redis | JPEGs in Redis, float32 | blob store, float32 | "
        "blob store, float16 (now) | the same on a 3-master Redis Cluster |",
        "|---|---|---|---|---|",
        "| INFO memory used_memory growth | "
        + " | ".join(f"{r['used_memory_per_image']:,}" for r in results.values())
        + " |",
        "| MEMORY USAGE of the keys, summed | "
        + " | ".join(f"{r['memory_usage_per_image']:,}" for r in results.values())
        + " |",
    ]
    for name in names:
        cells = [f"{r['per_image_by_family'].get(name, 0):,}" for r in results.values()]
        lines.append(f"| of which {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_bytes", description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    args = parser.parse_args(argv)
    results = {layout: measure(args.images, layout) for layout in LAYOUTS}
    table = report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis_bytes.json").write_text(json.dumps(results, indent=2))
    (args.out / "redis_bytes.md").write_text(
        f"{args.images:,} images, both methods indexed\n\n{table}\n"
    )
    print(f"{args.images:,} images, both methods indexed\n\n{table}")
    verdicts = []
    for layout in ("after", "cluster"):
        per_image = results[layout]["used_memory_per_image"]
        verdict = "within" if per_image <= LIMIT_PER_IMAGE else "OVER"
        print(f"{layout}: {per_image:,} bytes per image, {verdict} the {LIMIT_PER_IMAGE:,} budget")
        verdicts.append(per_image <= LIMIT_PER_IMAGE)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
