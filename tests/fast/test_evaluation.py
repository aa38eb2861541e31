"""Retrieval measures against hand-computed values."""

import pytest

from client.evaluation import average_precision_at, precision_at, summarise


def test_precision_at_k_counts_missing_results_as_wrong():
    assert precision_at(["a", "b", "a"], "a", 1) == 1.0
    assert precision_at(["a", "b", "a"], "a", 5) == pytest.approx(2 / 5)


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3 of 3 relevant in the catalogue: (1/1 + 2/3) / 3
    assert average_precision_at(["a", "b", "a", "c"], "a", 10, 3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at(["a", "a"], "a", 10, 2) == 1.0
    assert average_precision_at(["b"], "a", 10, 0) == 0.0


def test_summarise():
    summary = summarise([("a", ["a", "b"]), ("b", ["a", "a"])], {"a": 2, "b": 1})
    assert summary["queries"] == 2
    assert summary["p@1"] == 0.5
    assert summary["map@10"] == pytest.approx((1 / 2 + 0) / 2)
