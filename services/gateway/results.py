"""Merging per-method results into what a client reads: pure functions, unit-tested.

The fused list is a weighted sum of each method's standardised scores. Ranks alone
(reciprocal rank fusion) would weigh a weak method as much as a strong one; raw scores
cannot be added either (cosine similarity and Euclidean distance live on different
scales). Standardising each method's scores over its own candidate list puts them on one
scale per query, and the weights, fitted on held-out queries
(``services/gateway/fusion_calibration.py``), say how much each method is trusted.
"""

import statistics
from collections.abc import Callable
from typing import Any

# Reciprocal rank fusion constant (Cormack et al., 2009): damps the weight of the very top ranks
# so one method's first hit does not drown the other method's agreement lower down.
RRF_K = 60


def fuse_rankings(rankings: dict[str, list[dict[str, Any]]], k: int) -> list[dict[str, Any]]:
    """Reciprocal rank fusion of each method's ranked list; higher fused score is better.

    Kept as the baseline ``fusion_calibration`` compares the weighted fusion against.
    """
    fused: dict[str, dict[str, Any]] = {}
    for method, results in rankings.items():
        for result in results:
            entry = fused.setdefault(result["id"], {"id": result["id"], "score": 0.0, "ranks": {}})
            entry["score"] += 1.0 / (RRF_K + result["rank"])
            entry["ranks"][method] = result["rank"]
    return _ranked(fused, k)


def standardised_scores(results: list[dict[str, Any]], higher_is_better: bool) -> dict[str, float]:
    """Each result's score as a z-score over the list, oriented so that higher is better."""
    values = [r["score"] if higher_is_better else -r["score"] for r in results]
    if len(values) < 2:
        return {r["id"]: 0.0 for r in results}
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values) or 1.0
    return {r["id"]: (v - mean) / spread for r, v in zip(results, values, strict=True)}


def fuse_scores(
    lists: dict[str, dict[str, Any]], weights: dict[str, float], k: int
) -> list[dict[str, Any]]:
    """Weighted sum of standardised scores; higher fused score is better.

    ``lists`` maps a method to ``{"results": [...], "higher_is_better": bool}``. An image
    missing from a method's candidate list gets that list's lowest standardised score: the
    best it could have had, since it ranked below all of them.
    """
    standard = {
        method: standardised_scores(outcome["results"], outcome["higher_is_better"])
        for method, outcome in lists.items()
        if outcome["results"] and weights.get(method, 0.0) > 0
    }
    ranks = {m: {r["id"]: r["rank"] for r in lists[m]["results"]} for m in standard}
    fused: dict[str, dict[str, Any]] = {}
    for method in standard:
        for image_id in standard[method]:
            fused.setdefault(image_id, {"id": image_id, "score": 0.0, "ranks": {}})
    for method, scores in standard.items():
        floor = min(scores.values())
        for image_id, entry in fused.items():
            entry["score"] += weights[method] * scores.get(image_id, floor)
            if image_id in ranks[method]:
                entry["ranks"][method] = ranks[method][image_id]
    return _ranked(fused, k)


def _ranked(fused: dict[str, dict[str, Any]], k: int) -> list[dict[str, Any]]:
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
