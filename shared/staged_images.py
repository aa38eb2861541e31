"""An upload's canonical JPEGs staged in Redis for its index tasks, as search queries are.

The gateway has every upload's JPEG in hand when it queues the indexing, so it puts them
beside the job (``staged:{job_id}``) with a time-to-live; an index worker reads its chunk's
images there and so needs only Redis, wherever it runs. Each task marks itself done when
it finished (once, however often it is delivered) and the last one deletes the copies.
A task that finds its images gone (expired: it ran past the index deadline) falls back to
the blob store, and fails with a message saying so when that does not have them either.
"""

from typing import Final

import redis

from shared import keys
from shared.images import CanonicalImage

PENDING: Final = "pending"

_DONE = """
-- KEYS: staged hash.  ARGV: task id.  Counts a task once; the last one deletes the hash.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[1], 'done:' .. ARGV[1], 1) == 0 then
  return tonumber(redis.call('HGET', KEYS[1], 'pending'))
end
local left = redis.call('HINCRBY', KEYS[1], 'pending', -1)
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
"""


def stage(
    pipe: redis.client.Pipeline,
    job_id: str,
    images: dict[str, CanonicalImage],
    tasks: int,
    ttl_seconds: int,
) -> None:
    """Queue on ``pipe`` the staging of ``images`` for ``tasks`` index tasks of a job."""
    mapping: dict[str, str | bytes | int] = {PENDING: tasks}
    for image_id, image in images.items():
        mapping[f"jpeg:{image_id}"] = image.jpeg
        mapping[f"hash:{image_id}"] = image.content_hash
    pipe.hset(keys.staged_images(job_id), mapping=mapping)
    pipe.expire(keys.staged_images(job_id), ttl_seconds)


def read(client: redis.Redis, job_id: str, image_ids: list[str]) -> list[tuple[bytes, str] | None]:
    """Each staged image with the content hash of its upload; None where none is staged."""
    if not image_ids:
        return []
    raws = client.hmget(
        keys.staged_images(job_id),
        [f"jpeg:{i}" for i in image_ids] + [f"hash:{i}" for i in image_ids],
    )
    jpegs, hashes = raws[: len(image_ids)], raws[len(image_ids) :]
    return [
        (jpeg, content.decode()) if jpeg is not None and content is not None else None
        for jpeg, content in zip(jpegs, hashes, strict=True)
    ]


def done(client: redis.Redis, job_id: str, task_id: str) -> int:
    """Mark a task of the job finished with its images; tasks left (-1: none staged)."""
    script = client.register_script(_DONE)  # a hash computed locally; EVALSHA in Redis
    return int(script(keys=[keys.staged_images(job_id)], args=[task_id]))
