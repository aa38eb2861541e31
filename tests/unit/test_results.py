"""Result merging and job status rules."""

import pytest

from services.gateway.results import (
    RRF_K,
    decorate,
    fuse_rankings,
    fuse_scores,
    standardised_scores,
)
from shared.jobs import overall_status, status_from_celery


def ranked(*ids):
    return [{"id": i, "score": 0.0, "rank": n} for n, i in enumerate(ids, start=1)]


def test_fusion_rewards_agreement_between_methods():
    fused = fuse_rankings(
        {"vgg16": ranked("a", "b", "c"), "autoencoder": ranked("b", "d", "a")}, 10
    )
    assert [e["id"] for e in fused] == ["b", "a", "d", "c"]
    assert fused[0]["ranks"] == {"vgg16": 2, "autoencoder": 1}
    assert fused[0]["score"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1), abs=1e-6)
    assert [e["rank"] for e in fused] == [1, 2, 3, 4]


def test_fusion_of_one_method_keeps_its_order_and_k():
    assert [e["id"] for e in fuse_rankings({"vgg16": ranked("x", "y", "z")}, 2)] == ["x", "y"]
    assert fuse_rankings({}, 5) == []


def scored(higher_is_better, **scores):
    ordered = sorted(scores.items(), key=lambda item: item[1], reverse=higher_is_better)
    results = [{"id": i, "score": s, "rank": n} for n, (i, s) in enumerate(ordered, start=1)]
    return {"results": results, "higher_is_better": higher_is_better}


def test_standardised_scores_put_distances_and_similarities_on_one_scale():
    similarities = standardised_scores(scored(True, a=0.9, b=0.5, c=0.1)["results"], True)
    distances = standardised_scores(scored(False, a=1.0, b=5.0, c=9.0)["results"], False)
    assert similarities == pytest.approx(distances)
    assert similarities["a"] > 0 > similarities["c"]
    assert standardised_scores([{"id": "x", "score": 3.0}], True) == {"x": 0.0}
    assert standardised_scores(scored(True, a=0.5, b=0.5)["results"], True) == {"a": 0, "b": 0}


def test_weights_decide_between_methods_that_disagree():
    lists = {
        "vgg16": scored(True, a=0.9, b=0.2, c=0.1),
        "autoencoder": scored(False, b=0.1, a=0.9, d=1.0),
    }
    trust_vgg16 = fuse_scores(lists, {"vgg16": 1.0, "autoencoder": 0.2}, 10)
    trust_both = fuse_scores(lists, {"vgg16": 1.0, "autoencoder": 1.0}, 10)
    assert trust_vgg16[0]["id"] == "a"
    assert trust_vgg16[0]["ranks"] == {"vgg16": 1, "autoencoder": 2}
    assert [e["rank"] for e in trust_vgg16] == [1, 2, 3, 4]
    assert {e["id"] for e in trust_both} == {"a", "b", "c", "d"}
    assert trust_both[0]["score"] >= trust_both[1]["score"]


def test_an_image_one_method_missed_scores_no_better_than_its_last():
    lists = {"vgg16": scored(True, a=0.9, b=0.5, e=0.1), "autoencoder": scored(False, c=0.1, a=0.5)}
    fused = {e["id"]: e for e in fuse_scores(lists, {"vgg16": 1.0, "autoencoder": 1.0}, 10)}
    # c, missing from vgg16, gets the z of vgg16's last (e): a, first in vgg16, stays above.
    assert fused["a"]["score"] > fused["c"]["score"]
    assert fused["c"]["ranks"] == {"autoencoder": 1}


def test_a_method_weighted_zero_or_empty_is_left_out():
    lists = {"vgg16": scored(True, x=0.9, y=0.8), "autoencoder": scored(False)}
    assert [e["id"] for e in fuse_scores(lists, {"vgg16": 1.0, "autoencoder": 0.5}, 1)] == ["x"]
    lists["autoencoder"] = scored(False, z=0.0)
    assert "z" not in [e["id"] for e in fuse_scores(lists, {"vgg16": 1.0}, 5)]
    assert fuse_scores({}, {"vgg16": 1.0}, 5) == []


def test_decorate_drops_images_deleted_since_the_search():
    results = decorate(ranked("kept", "gone"), lambda i: {"url": f"/{i}"} if i == "kept" else None)
    assert results == [{"id": "kept", "score": 0.0, "rank": 1, "url": "/kept"}]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["queued", "queued"], "queued"),
        (["queued", "running"], "running"),
        (["done", "running"], "running"),
        (["done", "done"], "done"),
        (["done", "failed"], "done"),
        (["failed", "failed"], "failed"),
    ],
)
def test_overall_status(statuses, expected):
    assert overall_status(statuses) == expected


def test_celery_states_map_to_four_statuses():
    assert {
        status_from_celery(s) for s in ["PENDING", "STARTED", "PROGRESS", "SUCCESS", "FAILURE"]
    } == {
        "queued",
        "running",
        "done",
        "failed",
    }
