"""The image catalogue: metadata in Redis, the JPEGs in a blob store, keyed by image id.

Redis holds each entry's JSON metadata, which names two blobs (canonical JPEG, thumbnail);
the bytes are in the blob store (shared/blobs.py), content-addressed, so two ids with the
same picture share them. Redis also counts each blob's references (``blob:refs``): every
entry naming it, plus every write in progress. A writer first takes a reference, then
writes the bytes, then the entry; an entry leaving drops its references, and a blob whose
count falls to 0 is deleted only after a script has found it still at 0 and marked it
``blob:deleting``, atomically. A writer of the same bytes that comes meanwhile sees the
mark, waits until the file is gone, then writes it again; one that came before the mark
keeps the count above 0, so no delete starts. Hence an entry never names a missing blob:

- a crash between the reference and the entry leaves a count too high (a blob kept that
  nobody needs), never one too low;
- a reader that finds a blob gone checks the entry again: gone or replaced meanwhile means
  the image was deleted (None), still there means the blob store lost it (BlobMissing).

On a Redis Cluster the catalogue is split into partitions by a hash of the id
(shared/keys.py): an entry, its place in its partition's id list and its postings share a
slot, so an entry still changes in one transaction; a blob's references are in a slot of
their own, as entries in any partition may name it. The entry scripts then return the names
whose references to drop instead of dropping them, and the caller drops them right after:
a crash in between leaves a count too high, the safe side, as above.
"""

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import redis

from shared import keys
from shared.blobs import BlobMissing, BlobStore, blob_name
from shared.data_plane import get_many, is_cluster, queue_script
from shared.images import CanonicalImage
from shared.index_store import IndexStore
from shared.metadata_postings import MetadataPostings
from shared.shards import group_by_shard

# How long a blob's deletion may hold its mark; a writer of the same bytes waits at most
# this long (the mark expires if the deleting process died).
DELETE_MARK_SECONDS: Final = 30
_RESERVE_POLL_SECONDS: Final = 0.05

_RESERVE = """
-- KEYS: refs hash, then the deletion mark of each name.  ARGV: the names (their references
-- all in that hash: every blob's on one Redis, one blob's on a cluster).
-- A reference to each, unless one is being deleted (then nothing: the caller waits).
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for _, name in ipairs(ARGV) do redis.call('HINCRBY', KEYS[1], name, 1) end
return 1
"""

_RELEASE = """
-- KEYS: refs hash.  ARGV: names.  Drops one reference to each; returns those left at 0.
local freed = {}
for _, name in ipairs(ARGV) do
  if redis.call('HINCRBY', KEYS[1], name, -1) <= 0 then table.insert(freed, name) end
end
return freed
"""

_CLAIM_DELETE = """
-- KEYS: the name's refs hash, its deletion mark.  ARGV: name, token, mark milliseconds.
local count = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if count > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

_END_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# Writing an entry: its reservation becomes its reference; the references of the entry it
# replaces go. With ARGV[5] = 'absent' an id already present is left as it is (and the
# reservation is dropped). Returns {written 0|1, the entry found or '', freed names...}; with
# no refs hash (a cluster) the names whose reference the caller is to drop instead.
_WRITE_ENTRY = """
-- KEYS: meta, ids zset[, refs hash].  ARGV: id, meta json, added_at, 'replace'|'absent',
--       the new entry's blob names...
local old = redis.call('GET', KEYS[1])
local freed, written, drop = {}, 0, {}
if old and ARGV[4] == 'absent' then
  for i = 5, #ARGV do table.insert(drop, ARGV[i]) end
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  written = 1
  if old then
    local entry = cjson.decode(old)
    for _, name in ipairs({entry['image_blob'], entry['thumbnail_blob']}) do
      if type(name) == 'string' then table.insert(drop, name) end
    end
  end
end
for _, name in ipairs(drop) do
  if not KEYS[3] or redis.call('HINCRBY', KEYS[3], name, -1) <= 0 then
    table.insert(freed, name)
  end
end
return {written, old or '', unpack(freed)}
"""

_DELETE_ENTRY = """
-- KEYS: meta, ids zset[, refs hash].  ARGV: id.  Returns {deleted 0|1, freed names...}
-- (without the refs hash: the names whose reference the caller is to drop).
local old = redis.call('GET', KEYS[1])
if not old then return {0} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local entry, freed = cjson.decode(old), {}
for _, name in ipairs({entry['image_blob'], entry['thumbnail_blob']}) do
  if type(name) == 'string' then
    if not KEYS[3] or redis.call('HINCRBY', KEYS[3], name, -1) <= 0 then
      table.insert(freed, name)
    end
  end
end
return {1, unpack(freed)}
"""

_MIGRATE_ENTRY = """
-- KEYS: meta, catalog:image:{id}, catalog:thumb:{id}, refs hash.  ARGV: the entry as read,
--       the entry naming its blobs, the blob names.  Writes it only if unchanged meanwhile;
--       otherwise drops the reservation.  Returns {migrated 0|1, freed names...}.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2], KEYS[3])
  return {1}
end
local freed = {}
for i = 3, #ARGV do
  if redis.call('HINCRBY', KEYS[4], ARGV[i], -1) <= 0 then table.insert(freed, ARGV[i]) end
end
return {0, unpack(freed)}
"""


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
    # Names (sha256) of the canonical JPEG and the thumbnail in the blob store. Empty only
    # in entries written before the blob store, until their migration (migrate_legacy).
    image_blob: str = ""
    thumbnail_blob: str = ""

    @property
    def label(self) -> str:
        """What a person calls the image: its metadata label, else its file name, else its id."""
        return str(self.metadata.get("label") or self.filename or self.id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @property
    def blob_names(self) -> list[str]:
        return [self.image_blob, self.thumbnail_blob]

    def portable_json(self) -> str:
        """The record without where this deployment keeps its bytes (an index file's)."""
        record = asdict(self)
        del record["image_blob"], record["thumbnail_blob"]
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "ImageMeta":
        return cls(**json.loads(raw))


class Catalogue:
    def __init__(self, client: redis.Redis, blobs: BlobStore) -> None:
        self.redis = client
        self.blobs = blobs
        self.index_store = IndexStore(client)
        self.postings = MetadataPostings(client)
        self._reserve = client.register_script(_RESERVE)
        self._release_script = client.register_script(_RELEASE)
        self._claim_delete = client.register_script(_CLAIM_DELETE)
        self._end_delete = client.register_script(_END_DELETE)
        self._write_entry = client.register_script(_WRITE_ENTRY)
        self._delete_entry = client.register_script(_DELETE_ENTRY)
        self._migrate_entry = client.register_script(_MIGRATE_ENTRY)
        self.cluster = is_cluster(client)

    # Writes
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
                self._update_metadata(image_id, image.content_hash, metadata)
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
        meta = self._store_blobs(meta, image.jpeg, image.thumbnail)
        pipe = self.redis.pipeline(transaction=True)
        # Always, not only when an entry was seen above: two uploads of one id at the same
        # moment both see none, and the second must not keep the first one's vectors.
        self._forget_vectors(image_id, pipe)
        self.postings.queue_replace(pipe, image_id, metadata)
        self._queue_write(pipe, meta, "replace")  # last: its result names the freed blobs
        self._collect(self._dropped(pipe.execute()[-1][2:]))
        self._forget_vectors_after(image_id)
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
        stored = [self._store_blobs(meta, jpeg, thumb) for meta, jpeg, thumb in entries]
        pipe = self.redis.pipeline(transaction=False)  # each entry's script is atomic
        for meta in stored:
            self._queue_write(pipe, meta, "absent")
        outcome: dict[str, str] = {}
        freed: list[bytes] = []
        listing = self.redis.pipeline(transaction=False)
        for meta, (written, found, *names) in zip(stored, pipe.execute(), strict=True):
            freed += names
            if written:
                outcome[meta.id] = "added"
                self.postings.queue_replace(listing, meta.id, meta.metadata)
            elif ImageMeta.from_json(found).content_hash == meta.content_hash:
                outcome[meta.id] = "present"
            else:
                outcome[meta.id] = "conflict"
        # Only the entries written get postings: a filter misses an imported image for the
        # moment between the two round trips, never lists one that was not imported.
        listing.execute()
        self._collect(self._dropped(freed))
        return outcome

    def delete(self, image_id: str) -> bool:
        """Remove an image from the catalogue and from every index; False if it was unknown.

        Its blobs go too unless another entry still names them."""
        pipe = self.redis.pipeline(transaction=True)
        self._forget_vectors(image_id, pipe)
        self.postings.queue_forget(pipe, image_id)
        queue_script(  # last: its result says whether it was there and frees blobs
            self._delete_entry,
            pipe,
            self._entry_keys(image_id),
            [image_id],
        )
        deleted, *freed = pipe.execute()[-1]
        self._collect(self._dropped(freed))
        self._forget_vectors_after(image_id)
        return bool(deleted)

    def _entry_keys(self, image_id: str) -> list[str]:
        """What the entry scripts touch: the entry, its partition's id list, and on one Redis
        the blob references (on a cluster they are elsewhere: see _dropped)."""
        entry = [
            keys.catalogue_meta(image_id),
            keys.catalogue_ids(keys.catalogue_partition(image_id)),
        ]
        return entry if self.cluster else [*entry, keys.BLOB_REFERENCES]

    def _dropped(self, names: list) -> list:
        """The blobs left without references by an entry script: on one Redis it dropped
        them and returned those at 0; on a cluster it returned those to drop, dropped here."""
        return self._release(names) if self.cluster and names else names

    def _release(self, names: list) -> list:
        """Drop one reference to each name; the names left at 0."""
        freed: list = []
        for refs, group in self._by_references(names).items():
            freed += self._release_script(keys=[refs], args=group)
        return freed

    @staticmethod
    def _by_references(names: list) -> dict[str, list]:
        """Names grouped by the hash that counts their references (one on one Redis)."""
        groups: dict[str, list] = {}
        for raw in names:
            name = raw.decode() if isinstance(raw, bytes) else raw
            groups.setdefault(keys.blob_references(name), []).append(name)
        return groups

    def _forget_vectors(self, image_id: str, pipe: redis.client.Pipeline) -> None:
        """On one Redis, drop the id's vectors in the transaction that changes its entry."""
        if self.index_store.forgets_in_transaction:
            self.index_store.forget_image(image_id, pipe=pipe)

    def _forget_vectors_after(self, image_id: str) -> None:
        """On a cluster the indexes are in other slots: drop the id's vectors after its entry
        changed, which is what makes an embedding that ends meanwhile take its vector back
        (shared/index_store.py)."""
        if not self.index_store.forgets_in_transaction:
            self.index_store.forget_image(image_id)

    def _update_metadata(self, image_id: str, content_hash: str, metadata: dict) -> None:
        """Replace an entry's metadata if it still holds that picture (else leave it)."""
        key = keys.catalogue_meta(image_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # a delete or replacement meanwhile aborts the write
                    raw = pipe.get(key)
                    current = ImageMeta.from_json(raw) if raw else None
                    if current is None or current.content_hash != content_hash:
                        return
                    pipe.multi()
                    pipe.set(key, ImageMeta(**{**asdict(current), "metadata": metadata}).to_json())
                    self.postings.queue_replace(pipe, image_id, metadata)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def _store_blobs(self, meta: ImageMeta, jpeg: bytes, thumbnail: bytes) -> ImageMeta:
        """Take a reference to the entry's two blobs, then write them; the meta naming them.

        The caller's entry write turns the reference into the entry's own (or drops it)."""
        names = [blob_name(jpeg), blob_name(thumbnail)]
        reserved: list[str] = []
        try:
            for refs, group in self._by_references(names).items():
                self._reserve_names(refs, group)
                reserved += group
            self.blobs.put(jpeg)
            self.blobs.put(thumbnail)
        except BaseException:
            self._collect(self._release(reserved))
            raise
        return ImageMeta(**{**asdict(meta), "image_blob": names[0], "thumbnail_blob": names[1]})

    def _reserve_names(self, refs: str, names: list[str]) -> None:
        """A reference to each of ``names`` (all counted in ``refs``), once none of them is
        being deleted."""
        deadline = time.monotonic() + DELETE_MARK_SECONDS + 1
        script_keys = [refs, *(keys.blob_deleting(n) for n in names)]
        while not self._reserve(keys=script_keys, args=names):
            if time.monotonic() > deadline:  # a mark outlives its expiry only if Redis is ill
                raise TimeoutError(f"blob {names} stayed marked for deletion")
            time.sleep(_RESERVE_POLL_SECONDS)

    def _queue_write(self, pipe: redis.client.Pipeline, meta: ImageMeta, mode: str) -> None:
        queue_script(
            self._write_entry,
            pipe,
            self._entry_keys(meta.id),
            [meta.id, meta.to_json(), meta.added_at, mode, meta.image_blob, meta.thumbnail_blob],
        )

    def _collect(self, names: list[bytes | str]) -> None:
        """Delete the blobs left without references, each only if it still has none."""
        for raw in names:
            name = raw.decode() if isinstance(raw, bytes) else raw
            token = uuid.uuid4().hex
            mark = keys.blob_deleting(name)
            if not self._claim_delete(
                keys=[keys.blob_references(name), mark],
                args=[name, token, DELETE_MARK_SECONDS * 1000],
            ):
                continue  # referenced again meanwhile
            try:
                self.blobs.delete(name)
            finally:
                self._end_delete(keys=[mark], args=[token])

    def migrate_legacy(self, batch: int = 256) -> int:
        """Move JPEGs stored in Redis by releases before the blob store into it; returns how
        many entries moved. Idempotent, safe beside uploads, deletes and another migration:
        an entry changed meanwhile is left to its new writer (or to the next run). A cluster
        has none: those releases never ran on one."""
        if self.cluster:
            return 0
        pattern = keys.catalogue_image("*")
        prefix = pattern.removesuffix("*")
        ids = [raw.decode().removeprefix(prefix) for raw in self.redis.scan_iter(pattern, 1000)]
        return sum(self._migrate(ids[i : i + batch]) for i in range(0, len(ids), batch))

    def _migrate(self, image_ids: list[str]) -> int:
        pipe = self.redis.pipeline(transaction=True)
        pipe.mget([keys.catalogue_meta(i) for i in image_ids])
        pipe.mget([keys.catalogue_image(i) for i in image_ids])
        pipe.mget([keys.catalogue_thumb(i) for i in image_ids])
        moved = 0
        for image_id, raw, jpeg, thumb in zip(image_ids, *pipe.execute(), strict=True):
            legacy = [keys.catalogue_image(image_id), keys.catalogue_thumb(image_id)]
            meta = ImageMeta.from_json(raw) if raw else None
            if meta is None or meta.image_blob or jpeg is None or thumb is None:
                # Deleted (a release before this one left the JPEGs of a deleted entry
                # only if it crashed), or migrated already: the Redis copies go.
                if meta is None or meta.image_blob:
                    self.redis.delete(*legacy)
                continue
            stored = self._store_blobs(meta, jpeg, thumb)
            done, *freed = self._migrate_entry(
                keys=[keys.catalogue_meta(image_id), *legacy, keys.BLOB_REFERENCES],
                args=[raw, stored.to_json(), stored.image_blob, stored.thumbnail_blob],
            )
            self._collect(freed)
            moved += int(done)
        return moved

    # Reads
    def get_meta(self, image_id: str) -> ImageMeta | None:
        raw = self.redis.get(keys.catalogue_meta(image_id))
        return ImageMeta.from_json(raw) if raw else None

    def get_metas(self, image_ids: list[str]) -> dict[str, ImageMeta]:
        if not image_ids:
            return {}
        raws = get_many(self.redis, [keys.catalogue_meta(i) for i in image_ids])
        return {i: ImageMeta.from_json(raw) for i, raw in zip(image_ids, raws, strict=True) if raw}

    def existing(self, image_ids: list[str]) -> set[str]:
        if not image_ids:
            return set()
        # The same hash as keys.catalogue_partition: the ids of each partition.
        by_partition = group_by_shard(image_ids, keys.catalogue_partitions())
        pipe = self.redis.pipeline(transaction=False)
        for partition, ids in by_partition.items():
            pipe.zmscore(keys.catalogue_ids(partition), ids)
        return {
            image_id
            for ids, scores in zip(by_partition.values(), pipe.execute(), strict=True)
            for image_id, score in zip(ids, scores, strict=True)
            if score is not None
        }

    def get_image(self, image_id: str) -> bytes | None:
        """The canonical JPEG of an image; None if the id is not in the catalogue."""
        entry = self.get_images_and_hashes([image_id])[0]
        return entry[0] if entry else None

    def get_images(self, image_ids: list[str]) -> list[bytes | None]:
        return [entry[0] if entry else None for entry in self.get_images_and_hashes(image_ids)]

    def get_images_and_hashes(self, image_ids: list[str]) -> list[tuple[bytes, str] | None]:
        """Each image with the content hash of its upload (never an image with the hash of
        the one it replaced); None for an id not stored."""
        return self._read_blobs(image_ids, "image_blob")

    def get_thumbnail(self, image_id: str) -> bytes | None:
        entry = self._read_blobs([image_id], "thumbnail_blob")[0]
        return entry[0] if entry else None

    def _read_blobs(self, image_ids: list[str], which: str) -> list[tuple[bytes, str] | None]:
        """One blob of each entry, with the entry's content hash.

        A blob is read after its entry; one found missing means the entry was deleted or
        replaced meanwhile (its entry is read again: the replacement's blob is read then),
        or the store lost it: BlobMissing.
        """
        metas = self.get_metas(image_ids)
        names = [getattr(metas[i], which) if i in metas else "" for i in image_ids]
        datas = self.blobs.get_many([n for n in names if n])
        by_name = dict(zip([n for n in names if n], datas, strict=True))
        out: list[tuple[bytes, str] | None] = []
        for image_id, name in zip(image_ids, names, strict=True):
            if not name:
                if image_id in metas:
                    raise BlobMissing(f"image {image_id!r} is not migrated to the blob store")
                out.append(None)
                continue
            data = by_name[name]
            if data is None:
                now = self.get_meta(image_id)
                if now is not None and getattr(now, which) == name:
                    raise BlobMissing(f"blob {name} of image {image_id!r} is missing")
                out.append(self._read_blobs([image_id], which)[0] if now else None)
                continue
            out.append((data, metas[image_id].content_hash))
        return out

    def size(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for partition in range(keys.catalogue_partitions()):
            pipe.zcard(keys.catalogue_ids(partition))
        return sum(int(count) for count in pipe.execute())

    def ids(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """Image ids in the order they were added (on a cluster: the first offset + limit
        of each partition, merged)."""
        partitions = keys.catalogue_partitions()
        end = -1 if limit is None else offset + limit - 1
        if partitions == 1:
            return [raw.decode() for raw in self.redis.zrange(keys.catalogue_ids(), offset, end)]
        pipe = self.redis.pipeline(transaction=False)
        for partition in range(partitions):
            pipe.zrange(keys.catalogue_ids(partition), 0, end, withscores=True)
        merged = sorted(
            (added_at, raw.decode()) for listing in pipe.execute() for raw, added_at in listing
        )
        chosen = merged[offset:] if limit is None else merged[offset : offset + limit]
        return [image_id for _, image_id in chosen]
