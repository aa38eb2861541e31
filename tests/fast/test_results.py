"""Result merging and job status rules."""

import pytest

from services.gateway.fusion_calibration import best_weight_of, fuse_scaled_scores
from services.gateway.results import RRF_K, decorate, fuse_rankings
from shared.jobs import overall_status, status_from_celery

EQUAL = {"vgg16": 1.0, "autoencoder": 1.0}


def ranked(*ids):
    return [{"id": i, "score": 0.0, "rank": n} for n, i in enumerate(ids, start=1)]


def test_fusion_rewards_agreement_between_methods():
    fused = fuse_rankings(
        {"vgg16": ranked("a", "b", "c"), "autoencoder": ranked("b", "d", "a")}, EQUAL, 10
    )
    assert [e["id"] for e in fused] == ["b", "a", "d", "c"]
    assert fused[0]["ranks"] == {"vgg16": 2, "autoencoder": 1}
    assert fused[0]["score"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1), abs=1e-6)
    assert [e["rank"] for e in fused] == [1, 2, 3, 4]


def test_weights_decide_between_methods_that_disagree():
    rankings = {"vgg16": ranked("a", "b"), "autoencoder": ranked("b", "a")}
    trust_vgg16 = fuse_rankings(rankings, {"vgg16": 1.0, "autoencoder": 0.3}, 10)
    trust_autoencoder = fuse_rankings(rankings, {"vgg16": 0.3, "autoencoder": 1.0}, 10)
    assert [e["id"] for e in trust_vgg16] == ["a", "b"]
    assert [e["id"] for e in trust_autoencoder] == ["b", "a"]
    assert trust_vgg16[0]["score"] == pytest.approx(1 / (RRF_K + 1) + 0.3 / (RRF_K + 2), abs=1e-6)


def test_fusion_of_one_method_keeps_its_order_and_k():
    assert [e["id"] for e in fuse_rankings({"vgg16": ranked("x", "y", "z")}, EQUAL, 2)] == [
        "x",
        "y",
    ]
    assert fuse_rankings({}, EQUAL, 5) == []


def test_a_method_weighted_zero_or_not_weighted_is_left_out():
    rankings = {"vgg16": ranked("x"), "autoencoder": ranked("z")}
    assert [e["id"] for e in fuse_rankings(rankings, {"vgg16": 1.0}, 5)] == ["x"]
    assert [e["id"] for e in fuse_rankings(rankings, {"vgg16": 0, "autoencoder": 1}, 5)] == ["z"]


def scored(higher_is_better, **scores):
    ordered = sorted(scores.items(), key=lambda item: item[1], reverse=higher_is_better)
    results = [{"id": i, "score": s, "rank": n} for n, (i, s) in enumerate(ordered, start=1)]
    return {"results": results, "higher_is_better": higher_is_better}


@pytest.mark.parametrize("scaling", ["z", "minmax"])
def test_scaled_score_fusion_puts_distances_and_similarities_on_one_scale(scaling):
    # The same ordering as a similarity and as a distance: each method's best comes first
    # under equal weights only when the scales agree.
    lists = {
        "vgg16": scored(True, a=0.9, b=0.5, c=0.1),
        "autoencoder": scored(False, c=1.0, b=5.0, a=9.0),
    }
    fused = [e["id"] for e in fuse_scaled_scores(lists, EQUAL, scaling)]
    assert sorted(fused) == ["a", "b", "c"]
    only_vgg16 = fuse_scaled_scores(lists, {"vgg16": 1.0, "autoencoder": 0.0}, scaling)
    assert [e["id"] for e in only_vgg16] == ["a", "b", "c"]


def test_scaled_score_fusion_gives_a_missed_image_the_lists_lowest_value():
    lists = {"vgg16": scored(True, a=0.9, b=0.5, e=0.1), "autoencoder": scored(False, c=0.1, a=0.5)}
    # c, missing from vgg16, gets the value of vgg16's last (e): a, first in vgg16, stays above.
    assert [e["id"] for e in fuse_scaled_scores(lists, EQUAL, "z")][:2] == ["a", "c"]


def test_the_chosen_weight_sits_on_a_plateau_not_a_spike():
    p_at_1 = {0.0: 0.50, 0.1: 0.50, 0.2: 0.60, 0.3: 0.50, 0.4: 0.56, 0.5: 0.57, 0.6: 0.56, 0.7: 0.5}
    assert best_weight_of({w: {"p@1": p, "map@10": 0.0} for w, p in p_at_1.items()}) == 0.5


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
