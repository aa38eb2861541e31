"""Export an index from Redis into an IndexFile, and import one into Redis.

An import checks the target first, never overwrites a catalogue entry, and stores vectors
through IndexStore.add_vectors and models through ModelStore.save, as the workers do.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import redis

from shared import keys, names
from shared.blobs import BlobMissing
from shared.catalogue import Catalogue, ImageMeta
from shared.data_plane import get_many, is_cluster
from shared.index_store import IndexStore
from shared.model_store import ModelStore
from shared.runtime.vector_index import decode_vector, vector_from_bytes, vector_to_bytes
from tools.index_transfer.file_format import (
    METRICS,
    ImageEntry,
    IndexFile,
    TransferRefused,
)

BATCH: Final = 256  # images per Redis round trip (a few MB of JPEGs)


def export_index(
    catalogue: Catalogue,
    method: str,
    version: str | None = None,
    batch: int = BATCH,
    index_shards: int = 1,
) -> IndexFile:
    """Read one index (the active version by default) with its catalogue entries and model.

    The index is scanned in batches; each batch's vectors and entries are read in one
    transaction, so a vector is always exported with the picture it was made from. Images
    deleted while the export runs are left out.
    """
    if method not in names.METHODS:
        raise TransferRefused(f"unknown method {method!r} (known: {', '.join(names.METHODS)})")
    client = catalogue.redis
    store = IndexStore(client, index_shards)
    version = version or store.versions(method).active
    if version is None:
        raise TransferRefused(f"{method} has no active version; name one with --version")
    model = None
    if method == "autoencoder":
        model = ModelStore(client).read(method, version)
        if model is None:
            raise TransferRefused(f"no {method} model is stored as version {version!r}")
    images: list[ImageEntry] = []
    vectors: list[np.ndarray] = []
    dim: int | None = None
    for chunk in _batches((image_id for image_id, _ in store.scan_vectors(method, version)), batch):
        for entry, raw in _read_entries(catalogue, store, method, version, chunk):
            dim = dim or decode_vector(raw).size
            try:
                vectors.append(vector_from_bytes(raw, dim))
            except ValueError as err:
                raise TransferRefused(f"index {method}/{version} is inconsistent: {err}") from err
            images.append(entry)
    if not images:
        raise TransferRefused(f"the {method} index of version {version!r} is empty or unknown")
    order = sorted(range(len(images)), key=lambda i: images[i].meta.id)  # same index, same file
    return IndexFile(
        method,
        version,
        METRICS[method],
        np.stack([vectors[i] for i in order]),
        [images[i] for i in order],
        model,
    )


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    seen: set[str] = set()  # HSCAN may return an id twice while Redis rehashes
    chunk: list[str] = []
    for item in items:
        if item not in seen:
            seen.add(item)
            chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_entries(
    catalogue: Catalogue, store: IndexStore, method: str, version: str, ids: list[str]
) -> Iterator[tuple[ImageEntry, bytes]]:
    """Each id's vector with its entry and JPEGs. Vectors and entries are read together,
    and an entry names its blobs by content, so the JPEGs are those the vector was made
    from; an image deleted before its JPEGs were read is left out. (On a Redis Cluster
    the two are in different slots and read one after the other: an image replaced while
    it is exported may go out with its old vector.)"""
    meta_keys = [keys.catalogue_meta(i) for i in ids]
    if is_cluster(catalogue.redis):
        vectors = store.get_vectors(method, version, ids)
        metas = get_many(catalogue.redis, meta_keys)
    else:
        pipe = catalogue.redis.pipeline(transaction=True)
        store.queue_get_vectors(pipe, method, version, ids)
        pipe.mget(meta_keys)
        *vector_replies, metas = pipe.execute()
        vectors = store.gathered_vectors(ids, vector_replies)
    for vector, raw in zip(vectors, metas, strict=True):
        if not (vector and raw):
            continue
        meta = ImageMeta.from_json(raw)
        try:
            jpeg, thumb = (
                catalogue.blobs.get(meta.image_blob),
                catalogue.blobs.get(meta.thumbnail_blob),
            )
        except BlobMissing:
            if catalogue.get_meta(meta.id) == meta:
                raise
            continue  # deleted or replaced since
        yield ImageEntry(meta, jpeg, thumb), vector


@dataclass
class ImportSummary:
    method: str
    version: str
    images_added: int = 0
    images_present: int = 0
    vectors_stored: int = 0
    vectors_present: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> ids
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, ids: list[str]) -> None:
        if ids:
            self.skipped.setdefault(reason, []).extend(ids)

    def lines(self) -> list[str]:
        out = [
            f"{self.method} version {self.version}",
            f"images added: {self.images_added}",
            f"images already present: {self.images_present}",
            f"vectors stored: {self.vectors_stored}",
            f"vectors already present: {self.vectors_present}",
        ]
        for reason, ids in self.skipped.items():
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            out.append(f"skipped {len(ids)}: {reason}: {shown}")
        return out + self.notes


CONFLICT = "another picture is stored under this id here"
GONE = "the image was deleted or replaced here during the import"


def import_index(
    catalogue: Catalogue, index: IndexFile, batch: int = BATCH, index_shards: int = 1
) -> ImportSummary:
    """Store a validated file's images, model and vectors where they are missing.

    Checks the target first (nothing is stored when it refuses). Catalogue entries are never
    overwritten: the vector of an image whose id holds another picture here is skipped.
    """
    client = catalogue.redis
    store = IndexStore(client, index_shards)
    method, version = index.method, index.model_version
    _check_target(client, store, index)
    summary = ImportSummary(method, version)
    # An autoencoder version is activated only where none is active. Until then it is
    # "being built", as during a training: images uploaded meanwhile are embedded into it.
    activate = index.model is not None and store.versions(method).active is None
    if index.model is not None:
        # Stored as the trainer stores it; "being built" until activated below.
        stored = ModelStore(client).save(method, version, index.model, building=activate)
        summary.notes.append(f"model: {'stored' if stored else 'already stored'}")
    for start in range(0, len(index.images), batch):
        entries = index.images[start : start + batch]
        outcome = catalogue.add_absent([(e.meta, e.jpeg, e.thumbnail) for e in entries])
        summary.images_added += sum(1 for o in outcome.values() if o == "added")
        summary.images_present += sum(1 for o in outcome.values() if o == "present")
        summary.skip(CONFLICT, [i for i, o in outcome.items() if o == "conflict"])
        rows = {
            e.meta.id: start + n for n, e in enumerate(entries) if outcome[e.meta.id] != "conflict"
        }
        todo = store.missing(method, version, list(rows))
        summary.vectors_present += len(rows) - len(todo)
        # The Lua script stores a vector only if its picture is the one in the catalogue,
        # and logs the add, so live replicas replay it like any other.
        added = store.add_vectors(
            method,
            version,
            {i: vector_to_bytes(index.vectors[rows[i]]) for i in todo},
            made_from={i: index.images[rows[i]].meta.content_hash for i in todo},
        )
        summary.vectors_stored += added
        if added < len(todo):
            summary.skip(GONE, store.missing(method, version, todo))
    if activate:
        summary.notes.append(_activate(store, catalogue, method, version))
    elif index.model is not None and (active := store.versions(method).active) != version:
        summary.notes.append(
            f"not activated: {active} answers searches here "
            f"(POST /api/v1/models/{method}/versions/{version}/activate switches to it)"
        )
    return summary


def _check_target(client: redis.Redis, store: IndexStore, index: IndexFile) -> None:
    """Refuse a file whose vectors this deployment could not search with its own models."""
    method, version = index.method, index.model_version
    active = store.versions(method).active
    if method == "vgg16" and active is not None and active != version:
        raise TransferRefused(
            f"this deployment's vgg16 model is {active}, the file's vectors are {version}: "
            "vectors of another layer cannot answer its queries"
        )
    sample = store.sample_vector(method, version)
    if sample and decode_vector(sample).size != index.dim:
        raise TransferRefused(f"the {method} index {version} here holds vectors of another size")
    if index.model is not None:
        stored = ModelStore(client).blob(method, version)
        if stored is not None and stored != index.model.blob:
            raise TransferRefused(f"another model is stored here as {method} version {version}")


def _activate(store: IndexStore, catalogue: Catalogue, method: str, version: str) -> str:
    """Activate an imported version if its index covers the catalogue (as the gateway's
    activate requires) and no version became active meanwhile."""
    indexed, total = store.size(method, version), catalogue.size()
    active = store.versions(method).active
    if indexed < total or active is not None:
        store.redis.srem(keys.building_versions(method), version)
        why = (
            f"{active} became active meanwhile"
            if active is not None
            else f"it has vectors for {indexed} of the {total} catalogue images here "
            f"(train a new version: POST /api/v1/models/{method}/trainings)"
        )
        return f"not activated: {why}"
    store.activate(method, version, previous=None)
    return f"activated: {method} searches use {version} now"
