"""Which catalogue images have a metadata value: one Redis SET of ids per (key, value).

A search's filter ({"label": "Lemon", "year": 2024}) is resolved by intersecting the sets of
its conditions (one SINTER), so a worker scans only the matching images, however few. The
sets are written in the same transaction as the catalogue entry they describe (the
catalogue queues ``queue_replace`` / ``queue_forget`` on its own pipeline), so they never
list an image that is gone or miss one that is there. Each image also keeps the set of the
posting keys that list it, so a script can undo exactly those when the entry changes or
goes, whatever its metadata was.

Only top-level values that are strings, numbers or booleans are listed (a filter can name
nothing else). Values are spelled as JSON, so "1" (a string) and 1 (a number) differ, while
1 and 1.0 are the same number. Catalogues stored before these sets existed are listed once
by ``ensure_backfilled``, idempotently, before the first filter is resolved.

On a Redis Cluster each catalogue partition (shared/keys.py) has posting sets of its own,
in the slot of its entries; a filter is then one SINTER per partition, united.
"""

import json
import logging
import math
from typing import Any

import redis

from shared import keys
from shared.data_plane import queue_in_one_slot, queue_script

log = logging.getLogger(__name__)

BACKFILL_BATCH = 500

_REPLACE_POSTINGS = """
-- KEYS[1]: the image's set of posting keys.  ARGV[1]: image id, ARGV[2..]: its posting keys
-- now (none: the image is gone).  Undoes what the image was listed under, then lists it anew.
for _, posting in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('SREM', posting, ARGV[1])
end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV do
  redis.call('SADD', ARGV[i], ARGV[1])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return #ARGV - 1
"""


def value_text(value: Any) -> str | None:
    """How a metadata value is spelled in a posting key; None for what is not listed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return None


def posting_keys(metadata: dict[str, Any], partition: int = 0) -> list[str]:
    """The posting keys that list an image with this metadata (in its partition)."""
    found = []
    for key, value in metadata.items():
        text = value_text(value)
        if text is not None:
            key_json = json.dumps(key, ensure_ascii=False)
            found.append(keys.catalogue_posting(key_json, text, partition))
    return found


class MetadataPostings:
    """The posting sets of one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._replace = client.register_script(_REPLACE_POSTINGS)

    def queue_replace(self, pipe: redis.client.Pipeline, image_id: str, metadata: dict) -> None:
        """List ``image_id`` under its metadata (and nothing else), within ``pipe``."""
        queue_script(
            self._replace,
            pipe,
            [keys.catalogue_postings_of(image_id)],
            [image_id, *posting_keys(metadata, keys.catalogue_partition(image_id))],
        )

    def queue_forget(self, pipe: redis.client.Pipeline, image_id: str) -> None:
        """Take ``image_id`` out of every posting set, within ``pipe``."""
        queue_script(self._replace, pipe, [keys.catalogue_postings_of(image_id)], [image_id])

    def matching(self, conditions: dict[str, Any]) -> set[str]:
        """The ids of the catalogue images whose metadata meets every condition."""
        self.ensure_backfilled()
        if len(posting_keys(conditions)) != len(conditions):  # a value never listed
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for partition in range(keys.catalogue_partitions()):
            queue_in_one_slot(pipe, "SINTER", posting_keys(conditions, partition))
        return {raw.decode() for found in pipe.execute() for raw in found}

    def ensure_backfilled(self) -> None:
        """List every entry stored before the posting sets existed; once, idempotently.

        Each batch is written under WATCH on its entries' metadata, so an entry changed or
        deleted meanwhile is read again rather than listed as it was.
        """
        ready_keys = [keys.catalogue_postings_ready(p) for p in range(keys.catalogue_partitions())]
        pipe = self.redis.pipeline(transaction=False)
        for ready in ready_keys:
            pipe.exists(ready)
        for partition, (ready, done) in enumerate(zip(ready_keys, pipe.execute(), strict=True)):
            if done:
                continue
            listing = self.redis.zrange(keys.catalogue_ids(partition), 0, -1)
            ids = [raw.decode() for raw in listing]
            for start in range(0, len(ids), BACKFILL_BATCH):
                self._backfill(ids[start : start + BACKFILL_BATCH])
            self.redis.set(ready, 1)
            log.info("metadata postings backfilled", extra={"images": len(ids)})

    def _backfill(self, image_ids: list[str]) -> None:
        meta_keys = [keys.catalogue_meta(i) for i in image_ids]
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*meta_keys)
                    metas = pipe.execute_command("MGET", *meta_keys)  # watched: at once
                    pipe.multi()
                    for image_id, raw in zip(image_ids, metas, strict=True):
                        if raw is not None:
                            metadata = json.loads(raw).get("metadata") or {}
                            self.queue_replace(pipe, image_id, metadata)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
