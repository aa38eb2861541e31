"""make bench-scale on a small index: every shard count finds what exact search finds."""

import json

import pytest

from bench import scale

pytestmark = pytest.mark.integration


def test_the_scale_bench_splits_the_index_and_merges_the_exact_top_10(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIMATE_INDEX_MIN_VECTORS", "0")  # a graph per shard, as at 1M
    assert scale.main(["--vectors", "20000", "--shards", "1,3", "--queries", "20",
                       "--out", str(tmp_path)]) == 0  # fmt: skip
    results = json.loads((tmp_path / "scale.json").read_text())
    assert [r["shards"] for r in results] == [1, 3]
    for result in results:
        assert sum(result["vectors_per_shard"]) == 20000
        assert len(result["vectors_per_shard"]) == result["shards"]
        assert result["search_kind"] == ["hnsw"]
        assert result["recall_at_10"] >= 0.95
        assert result["memory_per_replica_bytes"] > 0
        assert 1_000 < result["redis_bytes_per_vector"] < 4_000
    # Three shards hold a third of the index each: a replica's memory falls with it.
    assert results[1]["memory_per_replica_bytes"] < results[0]["memory_per_replica_bytes"]
    assert "| 3 |" in (tmp_path / "scale.md").read_text()
