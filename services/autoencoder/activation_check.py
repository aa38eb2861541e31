"""Is a newly trained autoencoder at least as good as the active one? One check, measured
the same way for both, on the vectors of their complete indexes.

- **Label P@1, leave-one-out**, when at least ``LABEL_CHECK_MIN_IMAGES`` catalogue images
  carry a ``metadata.label`` that another image shares: each such image (at most
  ``CHECK_MAX_QUERIES``, a fixed sample) is a query, its nearest other image in the index
  answers, and it counts when the labels agree. This is what users ask of a search (find
  more of the same thing). Training never sees the labels, so it cannot learn them by
  heart; both models are judged on the same images and the same catalogue.
- **Self-retrieval of augmented views** otherwise (no labels to judge by): held-out images
  of the new training (its validation split, which it never trained on) are cropped,
  flipped and colour-jittered once, and each model counts how often its index answers a view
  with the image it came from. The same views go to both models. The active model may have
  trained on those images, so the check leans towards keeping it: a new model has to win
  back that advantage.

Either way the new version becomes active only when its score is at least the active one's.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from shared.runtime.vector_index import VectorIndex

CheckKind = Literal["label_p_at_1", "augmented_self_retrieval"]
LABEL_CHECK_MIN_IMAGES = 20
CHECK_MAX_QUERIES = 500
VIEW_CHECK_IMAGES = 64
VIEW_SEED = 0


@dataclass(frozen=True)
class CheckPlan:
    """What both models are measured on."""

    kind: CheckKind
    query_ids: list[str]
    labels: dict[str, str]  # label_p_at_1: every labelled image's label
    views: np.ndarray | None = None  # augmented_self_retrieval: one view per query id


def shared_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labelled images whose label at least one other image has."""
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {i: label for i, label in labels.items() if counts[label] >= 2}


def label_plan(labels: dict[str, str], indexed: set[str]) -> CheckPlan | None:
    """The label check over the images both indexes hold, if enough are labelled."""
    usable = shared_labels({i: label for i, label in labels.items() if i in indexed})
    if len(usable) < LABEL_CHECK_MIN_IMAGES or len(set(usable.values())) < 2:
        return None
    order = np.random.default_rng(VIEW_SEED).permutation(sorted(usable))
    return CheckPlan("label_p_at_1", list(order[:CHECK_MAX_QUERIES]), labels)


def label_p_at_1(index: VectorIndex, plan: CheckPlan) -> float:
    """Leave-one-out P@1: the share of queries whose nearest other image has their label."""
    vectors = index.vectors_of(plan.query_ids)
    hits = 0
    for image_id, vector in zip(plan.query_ids, vectors, strict=True):
        nearest = [h.id for h in index.search(vector, 2) if h.id != image_id][:1]
        hits += bool(nearest) and plan.labels.get(nearest[0]) == plan.labels[image_id]
    return hits / len(plan.query_ids)


def self_retrieval(index: VectorIndex, plan: CheckPlan, view_vectors: np.ndarray) -> float:
    """The share of views whose nearest image in the index is the one they were made from."""
    hits = 0
    for image_id, vector in zip(plan.query_ids, view_vectors, strict=True):
        found = index.search(vector, 1)
        hits += bool(found) and found[0].id == image_id
    return hits / len(plan.query_ids)


def augmented_views(images: np.ndarray, min_crop_area: float, jitter: float) -> np.ndarray:
    """One augmented view of each image (uint8 batch), made once with a fixed seed."""
    import tensorflow as tf  # noqa: PLC0415 - the trainer has it loaded already

    from .training import augment  # noqa: PLC0415

    tf.random.set_seed(VIEW_SEED)
    views = augment(tf.convert_to_tensor(images, tf.float32), min_crop_area, jitter)
    return np.asarray(views).round().astype(np.uint8)
