"""Fitting the fused list's weights to one catalogue, from the catalogue's own labels.

Leave-one-out: each labelled catalogue image (a random subset of at most ``max_queries`` on a
large catalogue) is a query against every other image, ranked by each method exactly (one
matrix product per chunk of queries), and the two top-``candidates`` lists are fused with
weighted reciprocal rank fusion exactly as the gateway fuses a search
(``shared.fusion.RRF_K``). The autoencoder's share ``a`` runs over a grid from 0 (vgg16
alone) to 1 (the autoencoder alone); the fused weights are ``{vgg16: 1 - a, autoencoder: a}``,
only their ratio matters. README.md, "Retrieval quality", has the measurements behind the
choices below.
"""

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from shared import names
from shared.catalogue import Catalogue
from shared.contracts import FusionWeights
from shared.fusion import DEFAULT_CANDIDATES, MIN_LABELLED_IMAGES, RRF_K
from shared.index_store import IndexStore
from shared.runtime.vector_index import decode_vector

SHARE_GRID: tuple[float, ...] = tuple(round(0.05 * n, 2) for n in range(21))
QUERY_CHUNK = 256  # queries ranked per matrix product: bounded memory on a large catalogue
K = 10  # the metrics read the first 10 results (P@1, mAP@10)


@dataclass(frozen=True)
class LeaveOneOut:
    """LOO quality of every share of the grid, and the share chosen."""

    share: float  # the autoencoder's share chosen: 0 = vgg16 alone, 1 = autoencoder alone
    queries: int
    p_at_1: dict[float, float] = field(default_factory=dict)
    map_at_10: dict[float, float] = field(default_factory=dict)

    def quality(self, share: float) -> dict[str, float]:
        return {
            "p_at_1": round(self.p_at_1[share], 4),
            "map_at_10": round(self.map_at_10[share], 4),
        }


def leave_one_out(
    vgg16: np.ndarray,
    autoencoder: np.ndarray,
    labels: list[str],
    *,
    candidates: int = 50,
    max_queries: int = 1000,
    min_gain: float = 0.005,
    plateau: float = 0.003,
    seed: int = 0,
) -> LeaveOneOut:
    """Measure every share of SHARE_GRID by leave-one-out and choose one.

    ``vgg16`` rows are L2-normalised (cosine similarity, higher is better), ``autoencoder``
    rows are compared by Euclidean distance (lower is better), row i of both and ``labels[i]``
    describe the same image. The objective is the mean of P@1 and mAP@10. The choice is the
    middle of the plateau (the shares within ``plateau`` of the best), and the better single
    method unless fusing gains at least ``min_gain`` over it: a tie is no reason to let a
    second method reorder the list.
    """
    n = len(labels)
    if vgg16.shape[0] != n or autoencoder.shape[0] != n:
        raise ValueError("one vgg16 vector, one autoencoder vector and one label per image")
    classes, label_ids = np.unique(np.asarray(labels), return_inverse=True)
    relevant = np.bincount(label_ids, minlength=len(classes)) - 1  # the query itself is out
    rng = np.random.default_rng(seed)
    chosen = np.flatnonzero(relevant[label_ids] > 0)  # queries with something to find
    if len(chosen) > max_queries:
        chosen = np.sort(rng.choice(chosen, max_queries, replace=False))
    if len(chosen) == 0:
        raise ValueError("no labelled image shares its label with another")
    depth = min(candidates, n - 1)
    shares = np.asarray(SHARE_GRID)
    hits_at_1 = np.zeros(len(shares))
    average_precision = np.zeros(len(shares))
    # float64: a float32 product rounds differently with the BLAS thread count, which flips
    # near-ties (small images have many) and moved leave-one-out P@1 by up to 0.005.
    vgg16 = vgg16.astype(np.float64)
    autoencoder = autoencoder.astype(np.float64)
    squared_norms = np.einsum("ij,ij->i", autoencoder, autoencoder)
    for start in range(0, len(chosen), QUERY_CHUNK):
        queries = chosen[start : start + QUERY_CHUNK]
        rows = np.arange(len(queries))
        similarity = vgg16[queries] @ vgg16.T
        similarity[rows, queries] = -np.inf
        distance = squared_norms[None, :] - 2.0 * (autoencoder[queries] @ autoencoder.T)
        distance[rows, queries] = np.inf
        by_vgg16 = _top(-similarity, depth)
        by_autoencoder = _top(distance, depth)
        fused = _fused_top(by_vgg16, by_autoencoder, shares)  # (shares, queries, K)
        correct = label_ids[fused] == label_ids[queries][None, :, None]
        hits_at_1 += correct[:, :, 0].sum(axis=1)
        precision = np.cumsum(correct, axis=2) / np.arange(1, K + 1)
        normaliser = np.minimum(relevant[label_ids[queries]], K)[None, :]
        average_precision += ((precision * correct).sum(axis=2) / normaliser).sum(axis=1)
    p_at_1 = dict(zip(SHARE_GRID, (hits_at_1 / len(chosen)).tolist(), strict=True))
    map_at_10 = dict(zip(SHARE_GRID, (average_precision / len(chosen)).tolist(), strict=True))
    share = choose_share(p_at_1, map_at_10, min_gain=min_gain, plateau=plateau)
    return LeaveOneOut(share, len(chosen), p_at_1, map_at_10)


def choose_share(
    p_at_1: dict[float, float],
    map_at_10: dict[float, float],
    *,
    min_gain: float = 0.005,
    plateau: float = 0.003,
) -> float:
    """The middle of the best plateau of mean(P@1, mAP@10), each point averaged with its grid
    neighbours (single points move by noise); the better single method when fusing gains
    less than ``min_gain`` over it."""
    shares = sorted(p_at_1)
    raw = np.array([(p_at_1[s] + map_at_10[s]) / 2 for s in shares])
    smooth = np.array([raw[max(0, i - 1) : i + 2].mean() for i in range(len(shares))])
    single = 0 if raw[0] >= raw[-1] else len(shares) - 1
    best = int(np.argmax(smooth))
    if raw[best] - raw[single] < min_gain or smooth[best] - raw[single] < min_gain:
        return shares[single]
    # The contiguous run of shares around the best whose smoothed value is within the plateau.
    low = high = best
    while low > 0 and smooth[low - 1] >= smooth[best] - plateau:
        low -= 1
    while high < len(shares) - 1 and smooth[high + 1] >= smooth[best] - plateau:
        high += 1
    middle = (low + high) // 2
    return shares[middle] if raw[middle] - raw[single] >= min_gain else shares[best]


def _top(cost: np.ndarray, depth: int) -> np.ndarray:
    """Column indexes of the ``depth`` lowest costs of each row, lowest first."""
    part = np.argpartition(cost, depth - 1, axis=1)[:, :depth]
    order = np.argsort(np.take_along_axis(cost, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _fused_top(by_vgg16: np.ndarray, by_autoencoder: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The first K image indexes of each query's fused list, for every share: (S, Q, K)."""
    queries, depth = by_vgg16.shape
    reciprocal = 1.0 / (RRF_K + np.arange(1, depth + 1))
    # Candidates: vgg16's list then the autoencoder's; an image in both appears once, in the
    # first half, with both its terms.
    ids = np.concatenate([by_vgg16, by_autoencoder], axis=1)
    same = by_autoencoder[:, None, :] == by_vgg16[:, :, None]  # (Q, vgg16 rank, ae rank)
    in_autoencoder = same.any(axis=2)
    autoencoder_rank = same.argmax(axis=2)
    vgg16_term = np.concatenate(
        [np.broadcast_to(reciprocal, (queries, depth)), 0 * reciprocal[None].repeat(queries, 0)],
        axis=1,
    )
    autoencoder_term = np.concatenate(
        [
            np.where(in_autoencoder, reciprocal[autoencoder_rank], 0.0),
            np.broadcast_to(reciprocal, (queries, depth)),
        ],
        axis=1,
    )
    duplicate = np.concatenate([np.zeros((queries, depth), bool), same.any(axis=1)], axis=1)
    scores = (1 - shares)[:, None, None] * vgg16_term + shares[:, None, None] * autoencoder_term
    scores[:, duplicate] = -np.inf
    top = np.argsort(-scores, axis=2, kind="stable")[:, :, :K]
    return np.take_along_axis(np.broadcast_to(ids, scores.shape), top, axis=2)


def fit_catalogue(
    catalogue: Catalogue, candidates: int = DEFAULT_CANDIDATES, store: IndexStore | None = None
) -> FusionWeights:
    """Fit the fused list's weights to the labelled images of this catalogue.

    Uses each method's active index (read through ``store``: the worker's, which knows the
    shards; an index of one shard by default) and the images that have a vector in both and
    a ``metadata.label``; says why in a ``default`` record when there is too little to fit on.
    """
    started = time.time()
    store = store or IndexStore(catalogue.redis)
    size = catalogue.size()
    versions = {method: store.versions(method).active for method in names.METHODS}

    def default(reason: str, **counts: int) -> FusionWeights:
        return FusionWeights(
            weights=None,
            source="default",
            reason=reason,
            fitted_at=started,
            catalogue_size=size,
            autoencoder_version=versions["autoencoder"],
            **counts,
        )

    missing = [m for m, version in versions.items() if version is None]
    if missing:
        return default(f"no {' or '.join(missing)} model has indexed the catalogue yet")
    vectors = {m: dict(store.scan_vectors(m, versions[m])) for m in names.METHODS}
    both = sorted(set(vectors["vgg16"]) & set(vectors["autoencoder"]))
    labels = catalogue_labels(catalogue, both)
    counts = Counter(labels.values())
    usable = sorted(i for i, label in labels.items() if counts[label] >= 2)
    classes = len({labels[i] for i in usable})
    found = {"labelled_images": len(labels), "classes": len(counts)}
    if len(usable) < MIN_LABELLED_IMAGES or classes < 2:
        return default(
            f"{len(usable)} of the {len(both)} indexed images carry a metadata.label shared "
            f"with another image, in {classes} classes; a fit needs {MIN_LABELLED_IMAGES}, in "
            "at least 2 classes",
            **found,
        )

    def matrix(method: str) -> np.ndarray:
        return np.stack([decode_vector(vectors[method][i]) for i in usable])

    measured = leave_one_out(
        matrix("vgg16"), matrix("autoencoder"), [labels[i] for i in usable], candidates=candidates
    )
    share = measured.share
    if share == 0.0:
        how = "vgg16 alone: fusing gained less than 0.005 over it"
    elif share == 1.0:
        how = "the autoencoder alone: fusing gained less than 0.005 over it"
    else:
        how = f"autoencoder share {share}"
    fused = measured.quality(share)
    reason = (
        f"fitted on {len(usable)} labelled images ({classes} classes) at "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}: {how}; leave-one-out "
        f"P@1 {fused['p_at_1']:.3f} fused vs {measured.p_at_1[0.0]:.3f} vgg16 and "
        f"{measured.p_at_1[1.0]:.3f} autoencoder ({measured.queries} queries)"
    )
    return FusionWeights(
        weights={"vgg16": round(1.0 - share, 2), "autoencoder": share},
        source="fitted",
        reason=reason,
        fitted_at=started,
        labelled_images=len(labels),
        classes=classes,
        queries=measured.queries,
        catalogue_size=size,
        candidates=candidates,
        autoencoder_version=versions["autoencoder"],
        leave_one_out={
            "vgg16": measured.quality(0.0),
            "autoencoder": measured.quality(1.0),
            "fused": fused,
        },
        autoencoder_share={str(s): round(p, 4) for s, p in measured.p_at_1.items()},
    )


def catalogue_labels(catalogue: Catalogue, image_ids: list[str]) -> dict[str, str]:
    """``metadata.label`` of each of these catalogue images that has one (what a fit and
    bench.vector_precision count as classes)."""
    metas = {}
    for start in range(0, len(image_ids), 5_000):
        metas.update(catalogue.get_metas(image_ids[start : start + 5_000]))
    return {i: str(m.metadata["label"]) for i, m in metas.items() if m.metadata.get("label")}
