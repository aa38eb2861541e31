"""The command-line client against the running service: bulk indexing resumes, search prints."""

import json
import shutil
import subprocess
import sys

import pytest

from client.api import ApiClient
from client.cli import index_folder
from services.gateway.fusion_calibration import calibrate, load_queries

pytestmark = pytest.mark.integration


def test_bulk_indexing_resumes_and_reports_failures(service, sample_images, tmp_path):
    folder = tmp_path / "catalogue"
    products = ["Orange", "Plum", "Anjou", "Aubergine"]
    for product in products[:2]:  # the first, "interrupted" run saw only half of the folder
        shutil.copytree(sample_images[product][0].parent, folder / product)
    client = ApiClient(service.base_url, service.api_key)
    first = index_folder(client, folder, batch=3, quiet=True)
    assert first.failed == [] and first.added + first.skipped == 8

    for product in products[2:]:
        shutil.copytree(sample_images[product][0].parent, folder / product)
    (folder / "Plum" / "notes.jpg").write_bytes(b"this is not a photo")
    second = index_folder(client, folder, batch=3, quiet=True)
    assert second.skipped == 8, "images already indexed must be skipped"
    assert second.added == 8
    assert [f["file"] for f in second.failed] == ["Plum/notes.jpg"]
    assert "not an image" in second.failed[0]["reason"]

    third = index_folder(client, folder, batch=3, quiet=True)
    assert (third.added, third.skipped) == (0, 16)


def test_search_command_prints_a_table_and_json(service, sample_images):
    image = sample_images["Anjou"][0]
    run = [sys.executable, "-m", "client", "--url", service.base_url]
    table = subprocess.run(
        [*run, "search", str(image), "-k", "3"], capture_output=True, text=True, timeout=120
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["rank", "vgg16", "autoencoder"]
    as_json = subprocess.run(
        [*run, "search", str(image), "--json"], capture_output=True, text=True, timeout=120
    )
    assert '"status": "done"' in as_json.stdout


def test_readable_error_when_the_service_is_down(sample_images):
    result = subprocess.run(
        [sys.executable, "-m", "client", "--url", "http://127.0.0.1:9", "stats"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not reachable" in result.stderr and "Traceback" not in result.stderr


def test_eval_reports_quality_and_writes_lists_to_fit_the_fusion_on(
    service, sample_images, tmp_path
):
    catalogue, queries = tmp_path / "catalogue", tmp_path / "queries"
    products = ["Galia-Melon", "Garlic", "Lemon", "Red-Beet", "Yellow-Onion", "Royal-Gala"]
    for product in products:
        first, *rest = sample_images[product]
        (catalogue / product).mkdir(parents=True)
        (queries / product).mkdir(parents=True)
        shutil.copy(first, queries / product)
        for path in rest:
            shutil.copy(path, catalogue / product)
    report_path, lists_path = tmp_path / "eval.json", tmp_path / "lists.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "client", "--url", service.base_url, "--key", service.api_key]
        + ["eval", str(catalogue), str(queries)]
        + ["--json-out", str(report_path), "--results-out", str(lists_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].split() == ["method", "queries", "P@1", "P@5", "mAP@10"]
    report = json.loads(report_path.read_text())
    assert report["catalog"] == {"folder": str(catalogue), "images": 18, "classes": 6}
    vgg16 = report["methods"]["vgg16"]
    assert vgg16["queries"] == 6 and 0 <= vgg16["p@1"] <= 1
    lines = [json.loads(line) for line in lists_path.read_text().splitlines()]
    assert sorted(line["label"] for line in lines) == sorted(products)
    assert all(line["relevant"] == 3 for line in lines)
    assert all(line["methods"]["vgg16"]["higher_is_better"] for line in lines)

    fitted = calibrate(load_queries(lists_path))
    assert fitted["table"]["vgg16"] == pytest.approx(
        {k: vgg16[k] for k in ("queries", "p@1", "p@5", "map@10")}
    )
