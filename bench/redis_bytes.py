"""Redis bytes per catalogue image, in the layouts of three releases.

``python -m bench.redis_bytes [--images 10000]`` (``make bench-redis-bytes``) stores that
many images on a private redis-server, three times, and reports what Redis holds per image
with both methods indexed:

- **before**: the layout of the release before the blob store (canonical JPEG and
  thumbnail in Redis beside the metadata, ``write_legacy_entry``; float32 vectors);
- **float32**: the JPEGs in a blob store in a temporary directory, metadata in Redis
  (``Catalogue.put``), vectors still bare float32 (the release before float16);
- **after**: as the service stores images now: the blob store, and vectors as
  ``vector_to_bytes`` encodes them (float16 and a tag byte).

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
import tempfile
from pathlib import Path
from typing import Final

import numpy as np
import redis

from deploy.launcher import Processes, start_redis
from services.autoencoder.settings import AutoencoderSettings
from shared import keys
from shared.blobs import FileBlobStore
from shared.catalogue import Catalogue, ImageMeta
from shared.images import CanonicalImage, canonicalize
from shared.index_store import IndexStore
from shared.runtime.vector_index import vector_to_bytes

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "grocery-store" / "images"
VGG16 = ("vgg16", "vgg16-imagenet-pool512", 512)
CHUNK: Final = 64  # images per index task (INDEX_CHUNK_SIZE)
LIMIT_PER_IMAGE: Final = 4096
LAYOUTS: Final = ("before", "float32", "after")

# Key families: what each Redis key of the catalogue and its indexes is part of.
FAMILIES: Final = {
    "catalog:meta:": "metadata",
    "catalog:image:": "canonical JPEG",
    "catalog:thumb:": "thumbnail",
    keys.CATALOGUE_IDS: "id list",
    keys.BLOB_REFERENCES: "blob references",
    "index:": "vectors and logs",
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
    for prefix, name in FAMILIES.items():
        if key == prefix or (prefix.endswith(":") and key.startswith(prefix)):
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
            encode = vector_to_bytes if layout == "after" else np.ndarray.tobytes
            vectors = {i: encode(row) for i, row in zip(ids, rows, strict=True)}
            store.add_vectors(method, version, vectors, made_from=hashes)


def measure(count: int, layout: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="redis-bytes-") as scratch:
        procs = Processes()
        try:
            client = redis.Redis.from_url(start_redis(procs, Path(scratch) / "redis"))
            empty = int(client.info("memory")["used_memory"])
            store_images(client, count, layout, Path(scratch) / "blobs")
            used = int(client.info("memory")["used_memory"]) - empty
            families = key_families(client)
        finally:
            procs.stop()
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
        "blob store, float16 (now) |",
        "|---|---|---|---|",
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
    after = results["after"]["used_memory_per_image"]
    verdict = "within" if after <= LIMIT_PER_IMAGE else "OVER"
    print(f"\nafter: {after:,} bytes per image, {verdict} the {LIMIT_PER_IMAGE:,}-byte budget")
    return 0 if after <= LIMIT_PER_IMAGE else 1


if __name__ == "__main__":
    raise SystemExit(main())
