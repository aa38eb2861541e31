"""Compare fusions on held-out queries (the service fits its weights per catalogue itself).

    imgsearch eval CATALOGUE VALIDATION_QUERIES --results-out var/val.jsonl
    python -m services.gateway.fusion_calibration var/val.jsonl

Replays every query's per-method lists (as the workers returned them) through each fusion
and prints P@1, P@5 and mAP@10 of: each method alone; reciprocal rank fusion with equal
weights; and, for each autoencoder weight on a grid (vgg16's weight is 1: only the ratio
matters), the weighted rank fusion the gateway runs and two fusions of the scores
themselves, standardised (z-scores over each list) or min-max scaled, which were measured
as alternatives and lost (README, "Measured here"). The service fits the weights of its
fusion to each catalogue's labels (shared/runtime/fusion_fit.py); this script measures them,
and other fusions, on queries. Fit on a validation split, never on the queries the result is
reported on.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from client.evaluation import summarise

from .results import fuse_rankings

WEIGHT_GRID = [round(0.05 * n, 2) for n in range(0, 31)]  # 0 .. 1.5
K = 10


def load_queries(path: Path) -> list[dict[str, Any]]:
    queries = []
    for line in path.read_text().splitlines():
        query = json.loads(line)
        query["methods"].pop("fused", None)  # the gateway's own fusion, at the time
        for outcome in query["methods"].values():
            outcome["results"] = [
                {"id": image_id, "label": label, "score": score, "rank": rank}
                for rank, (image_id, label, score) in enumerate(outcome["results"], start=1)
            ]
        queries.append(query)
    return queries


def measure(queries: list[dict[str, Any]], fuse) -> dict[str, float]:
    """Metrics of FUSE(query's method lists) -> ranked results, over every query."""
    rankings, relevant = [], {}
    for query in queries:
        labels = {
            r["id"]: r["label"] for outcome in query["methods"].values() for r in outcome["results"]
        }
        ranked = fuse(query["methods"])
        rankings.append((query["label"], [labels[r["id"]] for r in ranked]))
        relevant[query["label"]] = query["relevant"]
    return summarise(rankings, relevant)


def fuse_scaled_scores(
    lists: dict[str, dict[str, Any]], weights: dict[str, float], scaling: str
) -> list[dict[str, Any]]:
    """The alternative: a weighted sum of each list's scores, oriented so higher is better and
    scaled per list ("z": standardised; "minmax": onto 0..1). An image missing from a list
    gets that list's lowest value, the best it could have had."""
    scaled = {}
    for method, outcome in lists.items():
        values = [
            r["score"] if outcome["higher_is_better"] else -r["score"] for r in outcome["results"]
        ]
        if scaling == "z":
            centre, spread = statistics.fmean(values), statistics.pstdev(values)
        else:
            centre, spread = min(values), max(values) - min(values)
        scaled[method] = {
            r["id"]: (v - centre) / (spread or 1.0)
            for r, v in zip(outcome["results"], values, strict=True)
        }
    totals = {image_id: 0.0 for values in scaled.values() for image_id in values}
    for method, values in scaled.items():
        floor = min(values.values())
        for image_id in totals:
            totals[image_id] += weights.get(method, 0.0) * values.get(image_id, floor)
    ordered = sorted(totals, key=lambda i: (-totals[i], i))[:K]
    return [{"id": image_id} for image_id in ordered]


def best_weight_of(grid: dict[float, dict[str, float]]) -> float:
    """The weight whose neighbourhood on the grid (itself and the weights either side) has
    the best mean P@1: a validation split of a few hundred queries moves single points by
    a few hundredths, and a plateau is a safer choice than its highest spike."""
    weights = sorted(grid)

    def neighbourhood(i: int) -> tuple[float, float]:
        around = [grid[w] for w in weights[max(0, i - 1) : i + 2]]
        return (
            statistics.fmean(m["p@1"] for m in around),
            statistics.fmean(m["map@10"] for m in around),
        )

    return weights[max(range(len(weights)), key=neighbourhood)]


def calibrate(queries: list[dict[str, Any]]) -> dict[str, Any]:
    def rank_fusion(weights):
        return lambda lists: fuse_rankings({m: o["results"] for m, o in lists.items()}, weights, K)

    methods = sorted({m for q in queries for m in q["methods"]})
    table = {
        m: measure(queries, lambda lists, m=m: lists.get(m, {}).get("results", [])) for m in methods
    }
    table["rank fusion, equal weights"] = measure(queries, rank_fusion(dict.fromkeys(methods, 1)))
    grids: dict[str, dict[float, dict[str, float]]] = {}
    for name, fuse in [
        ("weighted rank fusion", lambda w: rank_fusion(w)),
        ("standardised scores", lambda w: lambda lists: fuse_scaled_scores(lists, w, "z")),
        ("min-max scores", lambda w: lambda lists: fuse_scaled_scores(lists, w, "minmax")),
    ]:
        grids[name] = {
            weight: measure(queries, fuse({"vgg16": 1.0, "autoencoder": weight}))
            for weight in WEIGHT_GRID
        }
        best = best_weight_of(grids[name])
        table[f"{name}, autoencoder {best}"] = grids[name][best]
    best_weight = best_weight_of(grids["weighted rank fusion"])  # the gateway's fusion
    return {"best_autoencoder_weight": best_weight, "table": table, "grids": grids}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="imgsearch eval --results-out file")
    args = parser.parse_args(argv)
    report = calibrate(load_queries(args.results))
    names = list(report["grids"])
    print("P@1 by autoencoder weight: " + " | ".join(names))
    for weight in WEIGHT_GRID:
        cells = "  ".join(f"{report['grids'][n][weight]['p@1']:.3f}" for n in names)
        print(f"{weight:>5}  {cells}")
    print(f"\n{'':<42}  P@1    P@5    mAP@10")
    for name, row in report["table"].items():
        print(f"{name:<42}  {row['p@1']:.3f}  {row['p@5']:.3f}  {row['map@10']:.3f}")
    best = json.dumps({"vgg16": 1.0, "autoencoder": report["best_autoencoder_weight"]})
    print(f"\nbest: FUSION_WEIGHTS='{best}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
