"""The activation check's measures on known vectors: leave-one-out label P@1 and
self-retrieval, and when labels are enough to judge by."""

import numpy as np

from services.autoencoder.activation_check import (
    LABEL_CHECK_MIN_IMAGES,
    CheckPlan,
    label_p_at_1,
    label_plan,
    self_retrieval,
)
from shared.runtime.vector_index import VectorIndex


def index_of(vectors: dict[str, list[float]]) -> VectorIndex:
    index = VectorIndex(2, "euclidean")
    index.upsert(list(vectors), np.array(list(vectors.values()), np.float32))
    return index


def test_label_p_at_1_leaves_each_query_out():
    # Two tight pairs of the same label, and a pair whose nearest neighbours cross over.
    index = index_of(
        {"a1": [0, 0], "a2": [0, 0.1], "b1": [5, 5], "b2": [5, 5.1], "c1": [9, 0], "d1": [9.1, 0]}
    )
    labels = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C", "d1": "A"}
    plan = CheckPlan("label_p_at_1", ["a1", "a2", "b1", "b2", "d1"], labels)
    # a1, a2, b1, b2 find their twin; d1's nearest other is c1, labelled C.
    assert label_p_at_1(index, plan) == 4 / 5


def test_self_retrieval_counts_views_found_as_their_image():
    index = index_of({"x": [0, 0], "y": [10, 0]})
    plan = CheckPlan("augmented_self_retrieval", ["x", "y"], {})
    views = np.array([[1, 0], [4, 0]], np.float32)  # y's view landed nearer to x
    assert self_retrieval(index, plan, views) == 0.5


def test_labels_judge_only_when_enough_images_share_them():
    many = {f"i{n}": f"L{n % 5}" for n in range(LABEL_CHECK_MIN_IMAGES)}
    plan = label_plan(many, set(many))
    assert plan is not None and sorted(plan.query_ids) == sorted(many)
    # Labels nobody else has do not count; nor do images one of the indexes lacks.
    singles = {f"s{n}": f"unique-{n}" for n in range(50)}
    assert label_plan(singles, set(singles)) is None
    assert label_plan(many, set(list(many)[:-1])) is None
    assert label_plan({i: "same" for i in many}, set(many)) is None  # one label: no contrast
