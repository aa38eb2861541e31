"""Merging per-method results into what a client reads: pure functions, unit-tested."""

from collections.abc import Callable
from typing import Any

# Reciprocal rank fusion constant (Cormack et al., 2009): damps the weight of the very top ranks
# so one method's first hit does not drown the other method's agreement lower down.
RRF_K = 60


def fuse_rankings(rankings: dict[str, list[dict[str, Any]]], k: int) -> list[dict[str, Any]]:
    """Reciprocal rank fusion of each method's ranked list; higher fused score is better.

    Ranks, not raw scores, are fused because the methods' scores live on different scales
    (cosine similarity vs Euclidean distance).
    """
    fused: dict[str, dict[str, Any]] = {}
    for method, results in rankings.items():
        for result in results:
            entry = fused.setdefault(result["id"], {"id": result["id"], "score": 0.0, "ranks": {}})
            entry["score"] += 1.0 / (RRF_K + result["rank"])
            entry["ranks"][method] = result["rank"]
    ordered = sorted(fused.values(), key=lambda e: (-e["score"], e["id"]))[:k]
    for rank, entry in enumerate(ordered, start=1):
        entry["score"] = round(entry["score"], 6)
        entry["rank"] = rank
    return ordered


def decorate(
    results: list[dict[str, Any]], describe: Callable[[str], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """Add catalogue details to results; drop images deleted since the search ran."""
    decorated = []
    for result in results:
        details = describe(result["id"])
        if details is not None:
            decorated.append({**result, **details})
    return decorated
