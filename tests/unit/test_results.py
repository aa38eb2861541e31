"""Result merging and job status rules."""

import pytest

from services.gateway.results import RRF_K, decorate, fuse_rankings
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
