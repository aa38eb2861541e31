"""Index files (tools/index_transfer/) built in memory, for the format and transfer tests."""

import hashlib
import io
import json
import time
import zipfile

import numpy as np

from shared.catalogue import ImageMeta
from shared.images import canonicalize
from tests.helpers.images import solid
from tools.index_transfer.file_format import ImageEntry, IndexFile, ModelFile

VGG16_VERSION = "vgg16-imagenet-pool512"


def image_entries(ids: list[str], seed: int = 0) -> list[ImageEntry]:
    """Catalogue entries as Catalogue.put stores them, of distinct small pictures."""
    entries = []
    for n, image_id in enumerate(ids):
        colour = ((seed * 37 + n * 53) % 256, (n * 91) % 256, 120)
        image = canonicalize(solid(colour, (40, 30)), max_side=64, max_pixels=10_000)
        meta = ImageMeta(
            id=image_id,
            content_hash=image.content_hash,
            width=image.width,
            height=image.height,
            filename=f"{image_id}.png",
            source_format=image.source_format,
            added_at=time.time() + n,
            metadata={"n": n, "label": "é"},
        )
        entries.append(ImageEntry(meta, image.jpeg, image.thumbnail))
    return entries


def keras_file(payload: bytes = b"weights") -> bytes:
    """Bytes shaped like a .keras archive (the import never loads them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", payload)
    return buffer.getvalue()


def autoencoder_version(blob: bytes) -> str:
    return "ae-20260101T000000Z-" + hashlib.sha256(blob).hexdigest()[:8]


def unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def vgg16_file(ids: list[str], seed: int = 0) -> IndexFile:
    return IndexFile(
        "vgg16", VGG16_VERSION, "cosine", unit_vectors(len(ids), 512, seed), image_entries(ids)
    )


def autoencoder_file(ids: list[str], dim: int = 8) -> IndexFile:
    blob = keras_file()
    version = autoencoder_version(blob)
    meta = json.dumps({"version": version, "latent_dim": dim, "created_at": 1.0e9})
    model = ModelFile(blob, meta, {"loss_curve": b"\x89PNG curve", "preview": b"\x89PNG p"})
    vectors = unit_vectors(len(ids), dim) * 3
    return IndexFile("autoencoder", version, "euclidean", vectors, image_entries(ids), model)
