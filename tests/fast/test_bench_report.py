"""The benchmark's markdown table: which rows appear depends on what was measured."""

from bench.run import batching_markdown, markdown


def rate(median: float) -> dict:
    return {"median": median, "min": median - 1, "max": median + 1, "runs": 3}


def report(service: dict) -> dict:
    return {
        "machine": "x86_64, 2 cores (amx_bf16), Linux",
        "data": "photos",
        "baseline_images_per_second": rate(4.0),
        "bare_model_float32_images_per_second": rate(8.0),
        "service": {"images": 100, "index_images_per_second": {}, **service},
        "search": [],
    }


def test_the_ceiling_and_the_share_of_it_come_with_the_service_runs():
    text = markdown(
        report(
            {
                "index_images_per_second": {"vgg16": rate(20.0)},
                "ceiling_images_per_second": rate(25.0),
                "vgg16_share_of_ceiling": {"median": 0.8, "min": 0.7, "max": 0.9, "runs": 3},
            }
        )
    )
    assert "size, float32 | 8.0 img/s [7.0-9.0], 2.0x the baseline |" in text
    assert "bfloat16, the ceiling | 25.0 img/s [24.0-26.0], 6.2x the baseline |" in text
    assert "upload to searchable, vgg16 | 20.0 img/s [19.0-21.0], 5.0x the baseline |" in text
    assert "| vgg16 indexing rate / the ceiling measured around it | 0.80 [0.70-0.90] |" in text


def test_without_service_runs_there_is_no_ceiling_row():
    text = markdown(report({}))
    assert "float32 | 8.0 img/s" in text
    assert "ceiling" not in text


def test_the_batching_table_sets_each_client_count_off_beside_on():
    row = {"qps": 2.0, "p50_ms": 1000.0, "p95_ms": 1500.0, "n": 24}
    text = batching_markdown(
        {
            "machine": "x86_64, 2 cores (amx_bf16), Linux",
            "data": "photos",
            "search_batching": {
                "rounds": 4,
                "model_batch_gain": {
                    "precision": "mixed_bfloat16",
                    "alone_ms_per_image": 68.0,
                    "batch_of_16_ms_per_image": 38.0,
                    "gain": 1.79,
                },
                "clients": {
                    "off": {"8": row},
                    "on": {"8": {**row, "qps": 4.0, "p50_ms": 450.0}},
                },
            },
        }
    )
    assert "| 8 | 2.00 | 1000 / 1500 ms | 4.00 | 450 / 1500 ms | 0.45 |" in text
    assert "1.79x" in text and "medians of 4 rounds" in text
