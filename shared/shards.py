"""Index shards: which shard holds an image, and how per-shard top k lists become one.

Each method's index is split into ``INDEX_SHARDS`` shards by a stable hash of the image id
(the first 8 bytes of its SHA-256, modulo the shard count), the same in every process and
release. Taking the hash modulo S means that going from S to 2S shards splits shard k into
k and k + S, so a later re-sharding moves half of each shard and nothing else.

A search's exact top k is the merge of every shard's exact top k: each of the global top k
is in its own shard's top k. Ties are ordered by id, as VectorIndex orders them, so the
merged list equals the unsharded one. Pure Python: the gateway merges too.
"""

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

Ranked = TypeVar("Ranked")


def shard_of(image_id: str, shards: int) -> int:
    """The shard (0 .. shards - 1) whose index holds this image's vector."""
    if shards == 1:
        return 0
    digest = hashlib.sha256(image_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def group_by_shard(image_ids: Iterable[str], shards: int) -> dict[int, list[str]]:
    """The ids of each shard that holds any, in the order given."""
    groups: dict[int, list[str]] = {}
    for image_id in image_ids:
        groups.setdefault(shard_of(image_id, shards), []).append(image_id)
    return groups


def merge_top_k(
    ranked_lists: Iterable[Sequence[Ranked]],
    k: int,
    higher_is_better: bool,
    score: Callable[[Ranked], float],
    image_id: Callable[[Ranked], str],
) -> list[Ranked]:
    """The top k of several shards' top k lists, ties broken by id (as VectorIndex does)."""
    sign = -1.0 if higher_is_better else 1.0
    hits = [hit for ranked in ranked_lists for hit in ranked]
    return sorted(hits, key=lambda hit: (sign * score(hit), image_id(hit)))[:k]
