"""Fit the fusion weights on held-out queries.

    imgsearch eval CATALOG VALIDATION_QUERIES --results-out var/val.jsonl
    python -m services.gateway.fusion_calibration var/val.jsonl

Replays every query's per-method lists (as the workers returned them) through each fusion
and prints P@1, P@5 and mAP@10 of: each method alone, reciprocal rank fusion, and the
weighted fusion of standardised scores for each autoencoder weight on a grid (vgg16's weight
is 1: only the ratio matters). The best weight goes into ``FUSION_WEIGHTS``. Fit on a
validation split, never on the queries the result is reported on.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from client.evaluation import summarise

from .results import fuse_rankings, fuse_scores

WEIGHT_GRID = [round(0.05 * n, 2) for n in range(0, 41)]  # 0 .. 2


def load_queries(path: Path) -> list[dict[str, Any]]:
    queries = []
    for line in path.read_text().splitlines():
        query = json.loads(line)
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
        ranked = fuse({m: o for m, o in query["methods"].items() if m != "fused"})
        rankings.append((query["label"], [labels[r["id"]] for r in ranked]))
        relevant[query["label"]] = query["relevant"]
    return summarise(rankings, relevant)


def calibrate(queries: list[dict[str, Any]]) -> dict[str, Any]:
    k = 10
    methods = sorted({m for q in queries for m in q["methods"] if m != "fused"})
    table = {
        m: measure(queries, lambda lists, m=m: lists.get(m, {}).get("results", [])) for m in methods
    }
    table["rank fusion"] = measure(
        queries, lambda lists: fuse_rankings({m: o["results"] for m, o in lists.items()}, k)
    )
    grid = {}
    for weight in WEIGHT_GRID:
        weights = {"vgg16": 1.0, "autoencoder": weight}
        grid[weight] = measure(queries, lambda lists, w=weights: fuse_scores(lists, w, k))
    best = max(grid, key=lambda w: (grid[w]["p@1"], grid[w]["map@10"]))
    table[f"weighted, autoencoder {best}"] = grid[best]
    return {"best_autoencoder_weight": best, "table": table, "grid": grid}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="imgsearch eval --results-out file")
    args = parser.parse_args(argv)
    report = calibrate(load_queries(args.results))
    print("autoencoder weight  P@1    P@5    mAP@10")
    for weight, row in report["grid"].items():
        print(f"{weight:>18}  {row['p@1']:.3f}  {row['p@5']:.3f}  {row['map@10']:.3f}")
    print()
    for name, row in report["table"].items():
        print(f"{name:<28}  {row['p@1']:.3f}  {row['p@5']:.3f}  {row['map@10']:.3f}")
    best = json.dumps({"vgg16": 1.0, "autoencoder": report["best_autoencoder_weight"]})
    print(f"\nbest: FUSION_WEIGHTS='{best}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
