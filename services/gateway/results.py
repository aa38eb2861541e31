"""Merging per-method results into what a client reads: pure functions, unit-tested.

The fused list is weighted reciprocal rank fusion: an image scores the sum, over the methods
that returned it, of the method's weight / (RRF_K + its rank there). The weights say how
much each method is trusted; they are fitted to each catalogue's labels
(``shared/runtime/fusion_fit.py``, which replays this same fusion) and read by
``fusion_weights.py``. Fusions of the methods' scores themselves (standardised or min-max
scaled, since cosine similarity and Euclidean distance live on different scales) were
measured too and ranked worse (``services/gateway/fusion_calibration.py`` reports them).
"""

from collections.abc import Callable
from typing import Any

from shared.fusion import RRF_K


def fuse_rankings(
    rankings: dict[str, list[dict[str, Any]]], weights: dict[str, float], k: int
) -> list[dict[str, Any]]:
    """Weighted reciprocal rank fusion of each method's ranked list; higher is better.

    A method missing from ``weights`` or weighted 0 is left out.
    """
    fused: dict[str, dict[str, Any]] = {}
    for method, results in rankings.items():
        weight = weights.get(method, 0.0)
        if weight <= 0:
            continue
        for result in results:
            entry = fused.setdefault(result["id"], {"id": result["id"], "score": 0.0, "ranks": {}})
            entry["score"] += weight / (RRF_K + result["rank"])
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
