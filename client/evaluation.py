"""Retrieval quality measures: pure functions over ranked labels."""

from collections.abc import Sequence
from typing import Any


def precision_at(ranked: Sequence[str], label: str, k: int) -> float:
    """Share of the first k results carrying the query's label (missing results count as wrong)."""
    return sum(1 for r in ranked[:k] if r == label) / k


def average_precision_at(ranked: Sequence[str], label: str, k: int, relevant: int) -> float:
    """AP@k: mean of precision@i over the ranks i <= k that hold a relevant result.

    Normalised by min(relevant, k), the most relevant results k ranks can hold, so a perfect
    ranking scores 1 even when the catalogue has fewer than k images of the label.
    """
    if relevant <= 0:
        return 0.0
    hits = 0
    total = 0.0
    for rank, result in enumerate(ranked[:k], start=1):
        if result == label:
            hits += 1
            total += hits / rank
    return total / min(relevant, k)


def summarise(
    rankings: Sequence[tuple[str, Sequence[str]]], relevant_counts: dict[str, int]
) -> dict[str, float]:
    """P@1, P@5 and mAP@10 over (query label, ranked result labels) pairs."""
    n = len(rankings)
    if n == 0:
        return {"queries": 0, "p@1": 0.0, "p@5": 0.0, "map@10": 0.0}
    return {
        "queries": n,
        "p@1": sum(precision_at(r, q, 1) for q, r in rankings) / n,
        "p@5": sum(precision_at(r, q, 5) for q, r in rankings) / n,
        "map@10": sum(
            average_precision_at(r, q, 10, relevant_counts.get(q, 0)) for q, r in rankings
        )
        / n,
    }


def per_class(
    rankings: Sequence[tuple[str, Sequence[str]]], relevant_counts: dict[str, int]
) -> dict[str, dict[str, float]]:
    """``summarise`` for each query label alone, labels in order."""
    by_label: dict[str, list[tuple[str, Sequence[str]]]] = {}
    for label, ranked in rankings:
        by_label.setdefault(label, []).append((label, ranked))
    return {label: summarise(by_label[label], relevant_counts) for label in sorted(by_label)}


def fused_gain(methods: dict[str, dict[str, float]], fused: str = "fused") -> dict[str, Any]:
    """The fused list's gain over the best single method, per measure (the best may differ
    from one measure to the next); empty when the fused list or every single method is
    missing."""
    singles = {m: s for m, s in methods.items() if m != fused}
    if fused not in methods or not singles:
        return {}
    gain: dict[str, Any] = {}
    for measure in ("p@1", "p@5", "map@10"):
        best = max(singles, key=lambda m: singles[m][measure])
        gain[measure] = round(methods[fused][measure] - singles[best][measure], 4)
        gain[f"best_single_{measure}"] = best
    return gain
