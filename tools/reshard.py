"""Re-shard the vector indexes: copy every index from S shards to T, nothing embedded again.

``python -m tools.reshard --to 4`` (``make reshard TO=4``) copies each method's indexes (every
model version with vectors: the active one, one being built, the ones kept for rollback)
from the deployment's layout (``INDEX_SHARDS``, or ``--from``) into the layout of ``--to``
shards, beside it: the shard count is part of a shard's keys, so searches keep reading the
old layout, untouched, while the new one fills. Going from S to 2S splits each shard k into
k and k + S (``shared/shards.py``); any other count works too, moving more.

Safe while the service runs:

- a vector is copied through the workers' own write script, which stores it only if its
  image is still in the catalogue, so an image deleted meanwhile is never brought back;
- deletes reach the new layout by themselves once it has a vector (every shard is in
  ``index:registry``, which a delete walks);
- what is added or replaced in the old layout while the copy runs is in its change log:
  after the bulk copy each old shard's log is replayed from where the copy began, until it
  has nothing new (a log trimmed past that point is copied again whole).

Then restart the gateway and every worker with ``INDEX_SHARDS`` set to the new count (and
``SHARDS`` for replicas that serve some shards), run the command again to bring over what
was added between its end and the restart, and finally ``--drop-source`` to free the old
layout's memory. Talks to the Redis at REDIS_URL.
"""

import argparse
import sys
from dataclasses import dataclass, field

import redis

from shared import keys, names
from shared.catalogue import ImageMeta
from shared.data_plane import get_many, is_cluster
from shared.index_store import IndexStore, parse_stream_id
from shared.settings import CommonSettings, redis_client

COPY_BATCH = 1_000  # vectors per write script: one short atomic step at a time
MAX_CATCH_UP_ROUNDS = 100


@dataclass
class Copied:
    """What one index's copy did."""

    method: str
    version: str
    vectors: int = 0  # vectors written to the new layout (bulk copy and catch-up)
    replayed: int = 0  # old-layout log entries replayed after the bulk copy
    source_size: int = 0
    target_size: int = 0
    missing: int = 0  # old-layout vectors the new layout lacks at the end (0: complete)
    notes: list[str] = field(default_factory=list)


def layout_indexes(client: redis.Redis, shards: int) -> list[tuple[str, str]]:
    """(method, version) of every index that has shards in the layout of ``shards``."""
    found = set()
    for raw in client.smembers(keys.INDEX_REGISTRY):
        # A cluster's prefixes carry their hash tag: "index:{vgg16:v1:shard-0-of-2}".
        parts = raw.decode().replace("{", "").replace("}", "").split(":")
        if len(parts) < 3 or parts[0] != "index" or parts[1] not in names.METHODS:
            continue
        method, version, rest = parts[1], parts[2], parts[3:]
        if shards == 1 and not rest:
            found.add((method, version))
        elif shards > 1 and len(rest) == 1 and rest[0].endswith(f"-of-{shards}"):
            found.add((method, version))
    return sorted(found)


def newest_entry(store: IndexStore, method: str, version: str, shard: int) -> str:
    return store.log_state(method, version, shard).newest


def copy_index(source: IndexStore, target: IndexStore, method: str, version: str) -> Copied:
    """Copy one index from source's layout to target's, then replay what changed meanwhile."""
    copied = Copied(method, version)
    for shard in range(source.shards):
        position = newest_entry(source, method, version, shard)
        copied.vectors += _copy_shard(source, target, method, version, shard)
        for _ in range(MAX_CATCH_UP_ROUNDS):
            state = source.log_state(method, version, shard)
            if parse_stream_id(state.floor) > parse_stream_id(position):
                # The log was trimmed past where the copy began: copy the shard again whole.
                copied.notes.append(f"shard {shard}: log trimmed during the copy, copied again")
                position = state.newest
                copied.vectors += _copy_shard(source, target, method, version, shard)
                continue
            entries = source.read_log(method, version, after=position, shard=shard)
            if not entries:
                break
            copied.replayed += len(entries)
            copied.vectors += _replay(source, target, method, version, entries)
            position = entries[-1].entry_id
        else:
            copied.notes.append(f"shard {shard}: still changing after the catch-up; run again")
    copied.source_size = source.size(method, version)
    copied.target_size = target.size(method, version)
    copied.missing = sum(
        len(target.missing(method, version, ids))
        for ids in _batches(image_id for image_id, _ in source.scan_vectors(method, version))
    )
    return copied


def _batches(image_ids, size: int = COPY_BATCH):
    batch: list[str] = []
    for image_id in image_ids:
        batch.append(image_id)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _copy_shard(
    source: IndexStore, target: IndexStore, method: str, version: str, shard: int
) -> int:
    """Copy the shard's vectors that the new layout lacks (all of them the first time; a
    run after the restart copies only what was added in between)."""
    ids = (image_id for image_id, _ in source.scan_vectors(method, version, shard=shard))
    return sum(
        _copy_current(source, target, method, version, target.missing(method, version, batch))
        for batch in _batches(ids)
    )


def _replay(source: IndexStore, target: IndexStore, method: str, version: str, entries) -> int:
    """Bring the changes of old-layout log entries into the new layout."""
    changed = list(dict.fromkeys(e.image_id for e in entries))
    still_there = dict(zip(changed, source.get_vectors(method, version, changed), strict=True))
    # Gone from the old layout: gone from the new one (a delete of the image already removed
    # it there, unless it came before the new shard was registered).
    gone = [image_id for image_id in changed if still_there[image_id] is None]
    if gone:
        target.remove_vectors(method, version, gone)
    added = [e.image_id for e in entries if e.op == "add" and still_there[e.image_id]]
    return _copy_current(source, target, method, version, list(dict.fromkeys(added)))


def _copy_current(
    source: IndexStore, target: IndexStore, method: str, version: str, image_ids: list[str]
) -> int:
    """Copy these ids' vectors as the old layout holds them now. The catalogue's content
    hashes are read first and the vectors after: a picture replaced in between has lost its
    old vector already, or the write script refuses it (the hash no longer matches), so a
    vector of a picture that is gone never enters the new layout."""
    if not image_ids:
        return 0
    metas = get_many(source.redis, [keys.catalogue_meta(i) for i in image_ids])
    made_from = {
        image_id: ImageMeta.from_json(raw).content_hash
        for image_id, raw in zip(image_ids, metas, strict=True)
        if raw
    }
    vectors = source.get_vectors(method, version, image_ids)
    present = {
        image_id: vector
        for image_id, vector in zip(image_ids, vectors, strict=True)
        if vector is not None and image_id in made_from
    }
    return target.add_vectors(method, version, present, made_from=made_from)


def drop_layout(client: redis.Redis, shards: int, method: str, version: str) -> int:
    """Delete one index's keys in the layout of ``shards`` and unregister them."""
    dropped = 0
    for shard in range(shards):
        prefix = keys.index_prefix(method, version, shard, shards)
        # One transaction on one Redis; on a cluster the registry is in another slot.
        pipe = client.pipeline(transaction=not is_cluster(client))
        pipe.srem(keys.INDEX_REGISTRY, prefix)
        pipe.delete(*(f"{prefix}:{suffix}" for suffix in ("vectors", "log", "floor", "epoch")))
        dropped += pipe.execute()[1]
    return dropped


def reshard(client: redis.Redis, source_shards: int, target_shards: int) -> list[Copied]:
    """Copy every index of the source layout into the target layout (both left in place)."""
    if source_shards == target_shards:
        raise ValueError(f"the indexes already have {source_shards} shards")
    source = IndexStore(client, shards=source_shards)
    target = IndexStore(client, shards=target_shards)
    return [
        copy_index(source, target, method, version)
        for method, version in layout_indexes(client, source_shards)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.reshard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--to", type=int, required=True, help="the new shard count")
    parser.add_argument("--from", dest="source", type=int, help="default: INDEX_SHARDS")
    parser.add_argument(
        "--drop-source",
        action="store_true",
        help="after the copy, delete the old layout (only once every process uses --to)",
    )
    args = parser.parse_args(argv)
    settings = CommonSettings()
    source_shards = args.source or settings.index_shards
    if args.to < 1 or source_shards < 1:
        parser.error("shard counts start at 1")
    client = redis_client(settings)
    try:
        results = reshard(client, source_shards, args.to)
    except ValueError as err:
        parser.error(str(err))
    except redis.RedisError as err:
        print(f"Redis at REDIS_URL failed: {err}", file=sys.stderr)
        return 1
    if not results:
        print(f"no index has {source_shards} shards here; nothing to copy")
    incomplete = False
    for r in results:
        print(
            f"{r.method} {r.version}: {r.source_size:,} vectors in {source_shards} shards, "
            f"{r.target_size:,} in {args.to} ({r.vectors:,} written, {r.replayed:,} log "
            f"entries replayed){''.join('; ' + note for note in r.notes)}"
        )
        if r.missing:
            print(f"  {r.missing:,} of its vectors are not in the new layout yet: run again")
        incomplete |= bool(r.missing or r.notes)
    if args.drop_source:
        if incomplete:
            print("not dropping the old layout: the copy is not complete", file=sys.stderr)
            return 1
        for r in results:
            drop_layout(client, source_shards, r.method, r.version)
        print(f"dropped the {source_shards}-shard layout of {len(results)} indexes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
