"""The image catalogue in Redis: canonical images, thumbnails and metadata, keyed by image id."""

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from shared import keys
from shared.images import CanonicalImage
from shared.index_store import IndexStore
from shared.metadata_postings import MetadataPostings


@dataclass(frozen=True)
class ImageMeta:
    id: str
    content_hash: str
    width: int
    height: int
    filename: str | None
    source_format: str
    added_at: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What a person calls the image: its metadata label, else its file name, else its id."""
        return str(self.metadata.get("label") or self.filename or self.id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "ImageMeta":
        return cls(**json.loads(raw))


class Catalogue:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.index_store = IndexStore(client)
        self.postings = MetadataPostings(client)

    def put(
        self,
        image_id: str,
        image: CanonicalImage,
        *,
        filename: str | None,
        metadata: dict[str, Any],
    ) -> bool:
        """Store an image; returns False when the same bytes are already stored under this id.

        Replacing an id with different bytes drops its old vectors in the same transaction,
        so no index keeps a vector of a picture that is gone.
        """
        existing = self.get_meta(image_id)
        if existing is not None and existing.content_hash == image.content_hash:
            if existing.metadata != metadata and metadata:
                updated = ImageMeta(**{**asdict(existing), "metadata": metadata})
                pipe = self.redis.pipeline(transaction=True)
                pipe.set(keys.catalogue_meta(image_id), updated.to_json())
                self.postings.queue_replace(pipe, image_id, metadata)
                pipe.execute()
            return False
        meta = ImageMeta(
            id=image_id,
            content_hash=image.content_hash,
            width=image.width,
            height=image.height,
            filename=filename,
            source_format=image.source_format,
            added_at=time.time(),
            metadata=metadata,
        )
        pipe = self.redis.pipeline(transaction=True)
        # Always, not only when an entry was seen above: two uploads of one id at the same
        # moment both see none, and the second must not keep the first one's vectors.
        self.index_store.forget_image(image_id, pipe=pipe)
        self._queue_write(pipe, meta, image.jpeg, image.thumbnail)
        pipe.execute()
        return True

    def add_absent(self, entries: list[tuple[ImageMeta, bytes, bytes]]) -> dict[str, str]:
        """Store entries (meta, canonical JPEG, thumbnail) as they are, each only if its id is
        not in the catalogue: an entry already there is never overwritten.

        Returns each id's outcome: "added", "present" (the same picture is stored under it)
        or "conflict" (another picture is). An absent id has no vectors (vectors are stored
        only for catalogue entries and go with them), so there are none to forget.
        """
        if not entries:
            return {}
        meta_keys = [keys.catalogue_meta(meta.id) for meta, _, _ in entries]
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # Watched: an upload of one of these ids between our read and our write
                    # aborts the write, and the next pass sees the upload.
                    pipe.watch(*meta_keys)
                    stored = pipe.mget(meta_keys)
                    outcome: dict[str, str] = {}
                    pipe.multi()
                    for (meta, jpeg, thumbnail), raw in zip(entries, stored, strict=True):
                        if raw is None:
                            outcome[meta.id] = "added"
                            self._queue_write(pipe, meta, jpeg, thumbnail)
                        elif ImageMeta.from_json(raw).content_hash == meta.content_hash:
                            outcome[meta.id] = "present"
                        else:
                            outcome[meta.id] = "conflict"
                    pipe.execute()
                    return outcome
                except redis.WatchError:
                    continue

    def _queue_write(self, pipe: redis.client.Pipeline, meta: ImageMeta, jpeg: bytes, thumb: bytes):
        pipe.set(keys.catalogue_image(meta.id), jpeg)
        pipe.set(keys.catalogue_thumb(meta.id), thumb)
        pipe.set(keys.catalogue_meta(meta.id), meta.to_json())
        pipe.zadd(keys.CATALOGUE_IDS, {meta.id: meta.added_at})
        self.postings.queue_replace(pipe, meta.id, meta.metadata)

    def delete(self, image_id: str) -> bool:
        """Remove an image from the catalogue and from every index; False if it was unknown."""
        pipe = self.redis.pipeline(transaction=True)
        self.index_store.forget_image(image_id, pipe=pipe)
        pipe.delete(keys.catalogue_image(image_id), keys.catalogue_thumb(image_id))
        pipe.delete(keys.catalogue_meta(image_id))
        pipe.zrem(keys.CATALOGUE_IDS, image_id)
        self.postings.queue_forget(pipe, image_id)
        return bool(pipe.execute()[-3])

    def get_meta(self, image_id: str) -> ImageMeta | None:
        raw = self.redis.get(keys.catalogue_meta(image_id))
        return ImageMeta.from_json(raw) if raw else None

    def get_metas(self, image_ids: list[str]) -> dict[str, ImageMeta]:
        if not image_ids:
            return {}
        raws = self.redis.mget([keys.catalogue_meta(i) for i in image_ids])
        return {i: ImageMeta.from_json(raw) for i, raw in zip(image_ids, raws, strict=True) if raw}

    def existing(self, image_ids: list[str]) -> set[str]:
        if not image_ids:
            return set()
        scores = self.redis.zmscore(keys.CATALOGUE_IDS, image_ids)
        return {i for i, score in zip(image_ids, scores, strict=True) if score is not None}

    def get_image(self, image_id: str) -> bytes | None:
        return self.redis.get(keys.catalogue_image(image_id))

    def get_images(self, image_ids: list[str]) -> list[bytes | None]:
        if not image_ids:
            return []
        return self.redis.mget([keys.catalogue_image(i) for i in image_ids])

    def get_images_and_hashes(self, image_ids: list[str]) -> list[tuple[bytes, str] | None]:
        """Each image with the content hash of its upload, read together in one command (so
        never an image with the hash of the one it replaced); None for an id not stored."""
        if not image_ids:
            return []
        raws = self.redis.mget(
            [keys.catalogue_image(i) for i in image_ids]
            + [keys.catalogue_meta(i) for i in image_ids]
        )
        images, metas = raws[: len(image_ids)], raws[len(image_ids) :]
        return [
            (jpeg, ImageMeta.from_json(meta).content_hash) if jpeg and meta else None
            for jpeg, meta in zip(images, metas, strict=True)
        ]

    def get_thumbnail(self, image_id: str) -> bytes | None:
        return self.redis.get(keys.catalogue_thumb(image_id))

    def size(self) -> int:
        return int(self.redis.zcard(keys.CATALOGUE_IDS))

    def ids(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """Image ids in the order they were added."""
        end = -1 if limit is None else offset + limit - 1
        return [raw.decode() for raw in self.redis.zrange(keys.CATALOGUE_IDS, offset, end)]
