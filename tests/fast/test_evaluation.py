"""Retrieval measures against hand-computed values."""

import pytest

from client.evaluation import average_precision_at, fused_gain, per_class, precision_at, summarise


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


def test_per_class_measures_each_query_label_alone():
    rankings = [("a", ["a", "b"]), ("a", ["b", "a"]), ("b", ["b"])]
    classes = per_class(rankings, {"a": 2, "b": 1})
    assert list(classes) == ["a", "b"]
    assert classes["a"]["queries"] == 2 and classes["a"]["p@1"] == 0.5
    assert classes["b"]["p@1"] == 1.0


def test_the_fused_gain_is_over_the_best_single_method_of_each_measure():
    methods = {
        "vgg16": {"p@1": 0.5, "p@5": 0.4, "map@10": 0.30},
        "autoencoder": {"p@1": 0.3, "p@5": 0.45, "map@10": 0.20},
        "fused": {"p@1": 0.58, "p@5": 0.5, "map@10": 0.29},
    }
    gain = fused_gain(methods)
    assert gain["p@1"] == pytest.approx(0.08) and gain["best_single_p@1"] == "vgg16"
    assert gain["p@5"] == pytest.approx(0.05) and gain["best_single_p@5"] == "autoencoder"
    assert gain["map@10"] == pytest.approx(-0.01)
    assert fused_gain({"vgg16": methods["vgg16"]}) == {}
