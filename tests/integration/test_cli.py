"""The command-line client against the running service: bulk indexing resumes, search prints."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from client.api import ApiClient, content_id
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
    titles = [line.split(":")[0] for line in table.stdout.splitlines() if ":" in line]
    # No autoencoder is trained in this module: a line says so instead of its table.
    assert titles == ["vgg16", "fused", "autoencoder"]
    assert table.stdout.splitlines()[1].split() == ["rank", "score", "label", "id"]
    as_json = subprocess.run(
        [*run, "search", str(image), "--json"], capture_output=True, text=True, timeout=120
    )
    assert '"status": "done"' in as_json.stdout


def test_search_by_a_catalogue_id_leaves_the_image_out_of_its_results(service, sample_images):
    # Indexed by the first test of this module, labelled by its folder.
    query_id = content_id(sample_images["Anjou"][0].read_bytes())
    url = ["--url", service.base_url]
    table = cli("search", "--id", query_id, "-k", "3", "--methods", "vgg16", *url)
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()[3:6]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert query_id not in {row[3] for row in rows}, "the query is not its own result"
    assert rows[0][2] == "Anjou", "its nearest other image is another photo of the same pear"

    as_json = json.loads(cli("search", "--id", query_id, "--json", *url).stdout)
    assert as_json["params"]["image_id"] == query_id
    assert query_id not in [r["id"] for r in as_json["fused"]["results"]]

    unknown = cli("search", "--id", "no-such-image", *url)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip() == "error: 404: no image with id 'no-such-image' in the catalogue"
    both = cli("search", str(sample_images["Anjou"][0]), "--id", query_id, *url)
    assert both.returncode == 2 and "not both" in both.stderr


def cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess:
    """imgsearch with ARGS, its key given only by KEY (never by this process' API_KEY)."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "IMGSEARCH_URL")}
    env |= {"API_KEY": key} if key else {}
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_search_rows_show_labels_and_full_ids_that_delete_takes(service, tmp_path):
    photo = tmp_path / "Zebra-Stripes" / "zebra.png"
    photo.parent.mkdir()
    stripes = (np.indices((96, 96)).sum(axis=0) // 8 % 2 * 255).astype(np.uint8)
    Image.fromarray(stripes).convert("RGB").save(photo)
    url = ["--url", service.base_url]  # after the command, as users type it
    assert cli("index", str(tmp_path), *url, key=service.api_key).returncode == 0

    table = cli("search", str(photo), "-k", "3", "--methods", "vgg16", *url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("vgg16: cosine similarity, higher is more similar")
    rank, score, label, image_id = lines[3].split()
    assert (rank, label) == ("1", "Zebra-Stripes") and float(score) == pytest.approx(1, abs=1e-3)
    assert len(image_id) == 32, "the full id, not a shortened one"

    deleted = cli("delete", image_id, *url, key=service.api_key)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted {image_id}")
    again = cli("delete", image_id, *url, key=service.api_key)
    assert again.returncode == 1 and "404" in again.stderr and "Traceback" not in again.stderr


def test_index_without_a_key_stops_at_the_first_refusal(service, tmp_path):
    noise = np.random.default_rng(2026)  # images the catalogue cannot hold yet
    for n in range(6):
        pixels = noise.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"noise-{n}.png")
    refused = cli("--url", service.base_url, "index", str(tmp_path), "--batch", "1")
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "401" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_missing_query_file_is_one_line_not_a_traceback():
    missing = cli("--url", "http://127.0.0.1:9", "search", "/nonexistent.jpg")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: /nonexistent.jpg: no such file"


def test_help_names_the_environment_variables():
    shown = cli("--help").stdout
    assert "IMGSEARCH_URL" in shown and "API_KEY" in shown and "var/api_key" in shown


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
