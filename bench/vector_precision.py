"""What storing vectors as float16 instead of float32 changes in search results.

``python -m bench.vector_precision [--redis-url URL]`` reads each method's active index from
a service's Redis, where it must still hold float32 vectors (an index built by a release
before float16: the comparison needs the float32 originals), and the catalogue's labels
(``metadata.label``, as ``imgsearch eval`` or ``imgsearch index --label-from-folder`` set
them). Every labelled image is a query against the rest (leave-one-out), once against the
float32 vectors and once against their float16 copies as ``vector_to_bytes`` stores them,
the query itself float32 as a worker embeds it. Reported per method: how many of the
top 10 the two agree on, how often the top result is the same, the largest score change,
and P@1 of each.
"""

import argparse
import json
import sys
from collections import Counter

import numpy as np
import redis

from shared import names
from shared.blobs import open_blob_store
from shared.catalogue import Catalogue
from shared.index_store import IndexStore
from shared.runtime.fusion_fit import catalogue_labels
from shared.runtime.vector_index import EARLIER_DTYPE, decode_vector, vector_to_bytes
from shared.settings import CommonSettings

K = 10
QUERY_CHUNK = 256


def stored_as_float16(raw: bytes) -> np.ndarray:
    return decode_vector(vector_to_bytes(decode_vector(raw)))


def scores(queries: np.ndarray, catalogue: np.ndarray, metric: str) -> np.ndarray:
    """Higher is better for both metrics (distances negated); float64 so that the product
    itself adds no rounding of its own to what is compared."""
    queries, catalogue = queries.astype(np.float64), catalogue.astype(np.float64)
    if metric == "cosine":
        return queries @ catalogue.T
    squared_distance = (
        np.einsum("ij,ij->i", queries, queries)[:, None]
        - 2 * queries @ catalogue.T
        + np.einsum("ij,ij->i", catalogue, catalogue)[None, :]
    )
    return -np.sqrt(np.maximum(squared_distance, 0))


def compare(reference: np.ndarray, labels: list[str], metric: str) -> dict[str, float]:
    """Leave-one-out top K of float32 queries against float32 and float16 catalogues."""
    half = np.stack([stored_as_float16(row.tobytes()) for row in reference])
    label_ids = np.unique(np.asarray(labels), return_inverse=True)[1]
    overlap = same_first = hits32 = hits16 = 0.0
    largest_change = 0.0
    for start in range(0, len(reference), QUERY_CHUNK):
        rows = np.arange(start, min(start + QUERY_CHUNK, len(reference)))
        queries = reference[rows]
        full, rounded = scores(queries, reference, metric), scores(queries, half, metric)
        full[np.arange(len(rows)), rows] = -np.inf
        rounded[np.arange(len(rows)), rows] = -np.inf
        top32 = np.argsort(-full, axis=1, kind="stable")[:, :K]
        top16 = np.argsort(-rounded, axis=1, kind="stable")[:, :K]
        for a, b in zip(top32, top16, strict=True):
            overlap += len(set(a) & set(b)) / K
        same_first += float((top32[:, 0] == top16[:, 0]).sum())
        hits32 += float((label_ids[top32[:, 0]] == label_ids[rows]).sum())
        hits16 += float((label_ids[top16[:, 0]] == label_ids[rows]).sum())
        picked = np.take_along_axis(full, top32, 1) - np.take_along_axis(rounded, top32, 1)
        largest_change = max(largest_change, float(np.abs(picked).max()))
    n = len(reference)
    return {
        "queries": n,
        "top10_overlap": round(overlap / n, 4),
        "same_top1": round(same_first / n, 4),
        "largest_score_change": float(f"{largest_change:.2g}"),
        "p_at_1_float32": round(hits32 / n, 4),
        "p_at_1_float16": round(hits16 / n, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vector_precision", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url)
    store = IndexStore(client)
    catalogue = Catalogue(client, open_blob_store(CommonSettings()))  # metadata only read
    metrics = {"vgg16": "cosine", "autoencoder": "euclidean"}
    results = {}
    for method in names.METHODS:
        version = store.versions(method).active
        if version is None:
            print(f"{method}: no active index", file=sys.stderr)
            continue
        vectors = dict(store.scan_vectors(method, version))
        if any(len(raw) % EARLIER_DTYPE.itemsize for raw in vectors.values()):
            print(
                f"{method} {version}: the index holds float16 vectors already; this needs one "
                "stored as float32 (by a release before float16)",
                file=sys.stderr,
            )
            return 2
        ids = sorted(vectors)
        labels = catalogue_labels(catalogue, ids)
        counts = Counter(labels.values())
        usable = [i for i in ids if i in labels and counts[labels[i]] >= 2]
        reference = np.stack([decode_vector(vectors[i]) for i in usable])
        results[method] = {"version": version} | compare(
            reference, [labels[i] for i in usable], metrics[method]
        )
        print(method, json.dumps(results[method]))
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
