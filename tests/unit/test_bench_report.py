"""The benchmark's markdown table: which rows appear depends on what was measured."""

from bench.run import markdown


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
