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
"""

import json
import logging
import math
from typing import Any

import redis

from shared import keys

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


def posting_keys(metadata: dict[str, Any]) -> list[str]:
    """The posting keys that list an image with this metadata."""
    found = []
    for key, value in metadata.items():
        text = value_text(value)
        if text is not None:
            found.append(keys.catalogue_posting(json.dumps(key, ensure_ascii=False), text))
    return found


class MetadataPostings:
    """The posting sets of one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._replace = client.register_script(_REPLACE_POSTINGS)

    def queue_replace(self, pipe: redis.client.Pipeline, image_id: str, metadata: dict) -> None:
        """List ``image_id`` under its metadata (and nothing else), within ``pipe``."""
        self._replace(
            keys=[keys.catalogue_postings_of(image_id)],
            args=[image_id, *posting_keys(metadata)],
            client=pipe,
        )

    def queue_forget(self, pipe: redis.client.Pipeline, image_id: str) -> None:
        """Take ``image_id`` out of every posting set, within ``pipe``."""
        self._replace(keys=[keys.catalogue_postings_of(image_id)], args=[image_id], client=pipe)

    def matching(self, conditions: dict[str, Any]) -> set[str]:
        """The ids of the catalogue images whose metadata meets every condition."""
        self.ensure_backfilled()
        wanted = posting_keys(conditions)
        if len(wanted) != len(conditions):  # a condition on a value never listed
            return set()
        return {raw.decode() for raw in self.redis.sinter(wanted)}

    def ensure_backfilled(self) -> None:
        """List every entry stored before the posting sets existed; once, idempotently.

        Each batch is written under WATCH on its entries' metadata, so an entry changed or
        deleted meanwhile is read again rather than listed as it was.
        """
        if self.redis.exists(keys.CATALOGUE_POSTINGS_READY):
            return
        ids = [raw.decode() for raw in self.redis.zrange(keys.CATALOGUE_IDS, 0, -1)]
        for start in range(0, len(ids), BACKFILL_BATCH):
            self._backfill(ids[start : start + BACKFILL_BATCH])
        self.redis.set(keys.CATALOGUE_POSTINGS_READY, 1)
        log.info("metadata postings backfilled", extra={"images": len(ids)})

    def _backfill(self, image_ids: list[str]) -> None:
        meta_keys = [keys.catalogue_meta(i) for i in image_ids]
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*meta_keys)
                    metas = pipe.mget(meta_keys)
                    pipe.multi()
                    for image_id, raw in zip(image_ids, metas, strict=True):
                        if raw is not None:
                            metadata = json.loads(raw).get("metadata") or {}
                            self.queue_replace(pipe, image_id, metadata)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
