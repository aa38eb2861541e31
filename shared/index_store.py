"""Vector indexes kept in Redis: the single source of truth every worker replica reads.

Each index (one per method and model version) is a hash of id -> vector bytes plus a stream
that logs every change. A replica loads the hash once, then before each search replays the
log entries it has not seen, so a change made through any replica is visible to all of them
as soon as the task that made it reports done. Writes are Lua scripts, atomic in Redis:

- adding a vector checks that the image is still in the catalogue, and still the picture
  the vector was made from, so an embedding that finishes after the image was deleted can
  never bring it back, nor one of the old picture stay for an id given a new one;
- forgetting an image removes its vector from every index of every method and version.

The log is trimmed to a bounded length; the id of the newest trimmed entry is kept as the
log's floor, and a replica that last read an entry older than the floor reloads everything.

An index may be split into shards (INDEX_SHARDS, shared/shards.py): each shard is an index
of its own as described here (hash, log, floor, epoch, under its own key prefix), and this
store routes each image to its shard, so a write, ``missing``, ``size`` and the scans see
the whole index; replicas, which follow a log, name the shard they follow.

Each index also has an epoch: a random id the first write sets, in the same script, so an
index and its epoch exist together. Redis that restarted empty, was flushed, or was given
another data set has no epoch or another one (or a log that ends before what a replica
read), and replicas then reload instead of serving vectors of images that are gone.
On a Redis Cluster (shared/data_plane.py) the catalogue and each index shard are in slots
of their own, so one script cannot check the catalogue and write a shard. The same two
guarantees then come from an order instead: a writer stores its vectors, then reads the
catalogue and takes back each vector whose image is gone or holds another picture by now;
a delete or replacement changes the catalogue first, then forgets the id in every index.
Whichever of the two comes second sees the other's work, so no vector outlives its image.
(A process killed between its two steps can leave one behind; searches never show it, as
the gateway keeps only results still in the catalogue.)

This module deals in bytes only (no numpy), so the gateway can use it too.
"""

import json
import uuid
from dataclasses import dataclass
from typing import NamedTuple

import redis

from shared import data_plane, keys
from shared.shards import group_by_shard, shard_of

# Entries kept in a change log before trimming; a replica that falls further behind than
# this reloads its whole index (cheap next to what it would replay).
LOG_MAX_ENTRIES = 100_000
_LOG_TRIM_SLACK = 1_000  # trim in steps rather than on every write

_ADD_VECTORS = """
-- KEYS: prefix..':vectors', prefix..':log', prefix..':floor', prefix..':epoch', then either
--       the registry and one catalogue meta key per vector (checked here: one Redis), or
--       nothing more (a cluster: the caller checks the catalogue after).  ARGV: prefix, max
--       log entries, slack, a new epoch (used if the index has none), then (id, vector,
--       content hash the vector was made from, or '' for any) triples.
local vectors, log, floor, epoch = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local checked = #KEYS > 4
local added = 0
for n = 1, (#ARGV - 4) / 3 do
  local image_id, vector, made_from = ARGV[2 + 3 * n], ARGV[3 + 3 * n], ARGV[4 + 3 * n]
  local keep = not checked
  if checked then
    local meta = redis.call('GET', KEYS[5 + n])
    keep = meta and (made_from == '' or cjson.decode(meta)['content_hash'] == made_from)
  end
  if keep then
    redis.call('HSET', vectors, image_id, vector)
    redis.call('XADD', log, '*', 'op', 'add', 'id', image_id)
    added = added + 1
  end
end
if added > 0 then
  redis.call('SET', epoch, ARGV[4], 'NX')
  if checked then redis.call('SADD', KEYS[5], ARGV[1]) end
  local max_entries, slack = tonumber(ARGV[2]), tonumber(ARGV[3])
  local length = redis.call('XLEN', log)
  if length > max_entries + slack then
    local dropped = redis.call('XRANGE', log, '-', '+', 'COUNT', length - max_entries)
    redis.call('SET', floor, dropped[#dropped][1])
    redis.call('XTRIM', log, 'MAXLEN', max_entries)
  end
end
return added
"""

_FORGET_IMAGE = """
-- KEYS: registry.  ARGV: image id.  Removes the id's vector from every index.
local removed = 0
for _, prefix in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HDEL', prefix .. ':vectors', ARGV[1]) == 1 then
    redis.call('XADD', prefix .. ':log', '*', 'op', 'del', 'id', ARGV[1])
    removed = removed + 1
  end
end
return removed
"""


_REMOVE_VECTORS = """
-- KEYS: one index shard's prefix..':vectors', prefix..':log'.  ARGV: image ids.
-- Removes those ids' vectors from this shard only, logged so that its replicas follow.
local removed = 0
for _, image_id in ipairs(ARGV) do
  if redis.call('HDEL', KEYS[1], image_id) == 1 then
    redis.call('XADD', KEYS[2], '*', 'op', 'del', 'id', image_id)
    removed = removed + 1
  end
end
return removed
"""


_TAKE_BACK_VECTORS = """
-- KEYS: one index shard's prefix..':vectors', prefix..':log'.  ARGV: (id, vector) pairs.
-- Removes each id's vector if it is still the one given (not one stored since), logged.
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('XADD', KEYS[2], '*', 'op', 'del', 'id', ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


class LogState(NamedTuple):
    """What a replica checks before replaying the log: is this still the index it loaded?"""

    epoch: str | None  # None: the index has never been written (or Redis lost it)
    floor: str  # newest entry trimmed away ("0-0": none)
    newest: str  # newest entry ("0-0": empty or missing log)


@dataclass(frozen=True)
class LogEntry:
    entry_id: str
    op: str  # "add" or "del"
    image_id: str


class ModelVersions(NamedTuple):
    active: str | None
    building: list[str]
    retained: list[str]

    def to_fill(self) -> list[str]:
        """Every version whose index a new image must enter, the active one first."""
        ordered = [self.active] if self.active else []
        return list(dict.fromkeys(ordered + self.building + self.retained))


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class IndexStore:
    """Redis operations on the vector indexes of one Redis database, split into ``shards``."""

    def __init__(self, client: redis.Redis, shards: int = 1) -> None:
        self.redis = client
        self.shards = shards
        self._add_vectors = client.register_script(_ADD_VECTORS)
        self._forget_image = client.register_script(_FORGET_IMAGE)
        self._remove_vectors = client.register_script(_REMOVE_VECTORS)
        self._take_back_vectors = client.register_script(_TAKE_BACK_VECTORS)
        # One Redis: a catalogue change and the forgetting of the id's vectors are one
        # transaction. A cluster: the catalogue changes, then forget_image runs (see above).
        self.forgets_in_transaction = not data_plane.is_cluster(client)

    def vectors_key(self, method: str, version: str, shard: int) -> str:
        return keys.index_vectors(method, version, shard, self.shards)

    def by_shard(self, image_ids: list[str]) -> dict[int, list[str]]:
        """The given ids grouped by the shard that holds them."""
        return group_by_shard(image_ids, self.shards)

    # Writes
    def add_vectors(
        self,
        method: str,
        version: str,
        vectors: dict[str, bytes],
        made_from: dict[str, str] | None = None,
    ) -> int:
        """Store vectors of images still in the catalogue; returns how many were stored.

        ``made_from`` maps ids to the content hash of the picture embedded: a vector is then
        stored only if the catalogue still holds that picture under its id. One script per
        shard: each is atomic, and a vector is in one shard only, so nothing is lost by it.
        """
        return sum(
            self._add_to_shard(method, version, shard, ids, vectors, made_from or {})
            for shard, ids in self.by_shard(list(vectors)).items()
        )

    def _add_to_shard(
        self,
        method: str,
        version: str,
        shard: int,
        ids: list[str],
        vectors: dict[str, bytes],
        made_from: dict[str, str],
    ) -> int:
        prefix = keys.index_prefix(method, version, shard, self.shards)
        script_keys = [
            keys.index_vectors(method, version, shard, self.shards),
            keys.index_log(method, version, shard, self.shards),
            keys.index_floor(method, version, shard, self.shards),
            keys.index_epoch(method, version, shard, self.shards),
        ]
        if self.forgets_in_transaction:
            script_keys += [keys.INDEX_REGISTRY, *(keys.catalogue_meta(i) for i in ids)]
        else:  # listed before the first vector, so a delete from now on looks in it
            self.redis.sadd(keys.INDEX_REGISTRY, prefix)
        args: list[str | bytes | int] = [prefix, LOG_MAX_ENTRIES, _LOG_TRIM_SLACK, uuid.uuid4().hex]
        for image_id in ids:
            args += [image_id, vectors[image_id], made_from.get(image_id, "")]
        added = int(self._add_vectors(keys=script_keys, args=args))
        if self.forgets_in_transaction:
            return added
        return added - self._take_back_stale(script_keys[:2], ids, vectors, made_from)

    def _take_back_stale(
        self,
        shard_keys: list[str],
        ids: list[str],
        vectors: dict[str, bytes],
        made_from: dict[str, str],
    ) -> int:
        """After storing vectors on a cluster: take back those whose image has left the
        catalogue or holds another picture by now; returns how many. ``shard_keys``: the
        shard's vectors and log."""
        metas = data_plane.get_many(self.redis, [keys.catalogue_meta(i) for i in ids])
        stale: list[str | bytes] = []
        for image_id, raw in zip(ids, metas, strict=True):
            wanted = made_from.get(image_id, "")
            if raw is None or (wanted and json.loads(raw)["content_hash"] != wanted):
                stale += [image_id, vectors[image_id]]
        if not stale:
            return 0
        return int(self._take_back_vectors(keys=shard_keys, args=stale))

    def forget_image(self, image_id: str, pipe: redis.client.Pipeline | None = None) -> None:
        """Remove an image's vectors from every index (queued on ``pipe`` when given; on a
        cluster never queued: call it after the catalogue change, see above)."""
        if self.forgets_in_transaction:
            self._forget_image(keys=[keys.INDEX_REGISTRY], args=[image_id], client=pipe)
            return
        if pipe is not None:
            raise ValueError("on a Redis Cluster an image is forgotten after its transaction")
        for raw in self.redis.smembers(keys.INDEX_REGISTRY):
            prefix = raw.decode()
            self._remove_vectors(keys=[f"{prefix}:vectors", f"{prefix}:log"], args=[image_id])

    def remove_vectors(self, method: str, version: str, image_ids: list[str]) -> int:
        """Remove these ids' vectors from this one index, whatever else holds them (a
        re-sharding bringing a delete into the new layout); returns how many were there."""
        return sum(
            int(
                self._remove_vectors(
                    keys=[
                        keys.index_vectors(method, version, shard, self.shards),
                        keys.index_log(method, version, shard, self.shards),
                    ],
                    args=ids,
                )
            )
            for shard, ids in self.by_shard(image_ids).items()
        )

    # Reads (of the whole index, every shard)
    def missing(self, method: str, version: str, image_ids: list[str]) -> list[str]:
        """The ids that have no vector yet in this index (so work is never done twice)."""
        if not image_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for image_id in image_ids:
            shard = shard_of(image_id, self.shards)
            pipe.hexists(self.vectors_key(method, version, shard), image_id)
        return [i for i, present in zip(image_ids, pipe.execute(), strict=True) if not present]

    def size(self, method: str, version: str) -> int:
        """Vectors in the index: the sum over its shards."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.hlen(self.vectors_key(method, version, shard))
        return sum(int(count) for count in pipe.execute())

    def get_vectors(self, method: str, version: str, image_ids: list[str]) -> list[bytes | None]:
        """Each id's vector bytes (None: absent), in the order given, from its shard."""
        if not image_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        self.queue_get_vectors(pipe, method, version, image_ids)
        return self.gathered_vectors(image_ids, pipe.execute())

    def queue_get_vectors(
        self, pipe: redis.client.Pipeline, method: str, version: str, image_ids: list[str]
    ) -> None:
        """Queue on ``pipe`` the reads of get_vectors (one HMGET per shard); its replies,
        in order, are what ``gathered_vectors`` takes (to read them in a transaction)."""
        for shard, ids in self.by_shard(image_ids).items():
            pipe.hmget(self.vectors_key(method, version, shard), ids)

    def gathered_vectors(self, image_ids: list[str], replies: list) -> list[bytes | None]:
        """The vectors of ``image_ids`` from the replies to queue_get_vectors' reads."""
        found: dict[str, bytes | None] = {}
        for ids, vectors in zip(self.by_shard(image_ids).values(), replies, strict=True):
            found.update(zip(ids, vectors, strict=True))
        return [found[image_id] for image_id in image_ids]

    def scan_vectors(self, method: str, version: str, shard: int | None = None, batch: int = 5_000):
        """Yield (id, vector bytes) for the whole index (or one shard), in chunks that never
        block Redis."""
        shards = range(self.shards) if shard is None else [shard]
        for each in shards:
            for image_id, vector in self.redis.hscan_iter(
                self.vectors_key(method, version, each), count=batch
            ):
                yield image_id.decode(), vector

    def sample_vector(self, method: str, version: str) -> bytes | None:
        """Any one vector of the index (to check its size), or None when it is empty."""
        for shard in range(self.shards):
            sample = self.redis.hrandfield(
                self.vectors_key(method, version, shard), 1, withvalues=True
            )
            if sample:
                return sample[1]
        return None

    # Reads of one shard: what a replica of it follows
    def log_state(self, method: str, version: str, shard: int = 0) -> LogState:
        """Epoch, floor and newest log entry of an index shard, in one round trip."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(keys.index_epoch(method, version, shard, self.shards))
        pipe.get(keys.index_floor(method, version, shard, self.shards))
        pipe.xrevrange(keys.index_log(method, version, shard, self.shards), count=1)
        epoch, floor, newest = pipe.execute()
        return LogState(
            epoch.decode() if epoch else None,
            floor.decode() if floor else "0-0",
            newest[0][0].decode() if newest else "0-0",
        )

    def read_log(
        self, method: str, version: str, after: str, count: int = 10_000, shard: int = 0
    ) -> list[LogEntry]:
        entries = self.redis.xrange(
            keys.index_log(method, version, shard, self.shards), min=f"({after}", count=count
        )
        return [
            LogEntry(entry_id.decode(), fields[b"op"].decode(), fields[b"id"].decode())
            for entry_id, fields in entries
        ]

    def versions(self, method: str) -> "ModelVersions":
        """Which model versions answer searches, are being built, and are kept complete."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.active_version(method))
        pipe.smembers(keys.building_versions(method))
        pipe.smembers(keys.retained_versions(method))
        active, building, retained = pipe.execute()
        return ModelVersions(
            active.decode() if active else None,
            sorted(v.decode() for v in building),
            sorted(v.decode() for v in retained),
        )

    def activate(self, method: str, version: str, previous: str | None) -> None:
        """Make ``version`` answer searches, in one transaction; keep ``previous`` complete
        too, so that switching back to it (a rollback) needs no re-embedding."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.active_version(method), version)
        pipe.srem(keys.building_versions(method), version)
        pipe.delete(keys.retained_versions(method))
        pipe.sadd(keys.retained_versions(method), version, *([previous] if previous else []))
        pipe.execute()

    def keep_as_candidate(self, method: str, version: str) -> None:
        """A finished version that does not answer searches (it lost the activation check):
        no longer being built, kept complete like the previous version, so activating it by
        hand needs no re-embedding until the next activation drops it from that set."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(keys.building_versions(method), version)
        pipe.sadd(keys.retained_versions(method), version)
        pipe.execute()
