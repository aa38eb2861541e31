"""End to end through HTTP: index, search, train, search again, delete; replicas agree."""

import concurrent.futures
import json
import time

import pytest
import requests

from deploy.launcher import start_worker, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def catalogue(service, sample_images):
    """24 fixture photos: one of each of the 21 products, and a second of three of them."""
    chosen = {f"{product}-0": paths[0] for product, paths in sample_images.items()}
    for product in list(sample_images)[:3]:
        chosen[f"{product}-1"] = sample_images[product][1]
    body = service.add_images(list(chosen.values()), ids=list(chosen))
    job = service.wait(body["job_id"])
    assert job["status"] == "done", job
    return chosen


def first_ids(job):
    return {
        method: [r["id"] for r in outcome.get("results", [])]
        for method, outcome in job["methods"].items()
    }


def test_search_train_delete(service, catalogue):
    query_id, query_path = "Lemon-0", catalogue["Lemon-0"]

    # Indexed by vgg16 at once; the autoencoder says clearly that it has no model yet.
    stats = requests.get(f"{service.api}/stats", timeout=5).json()
    assert stats["catalogue_size"] == len(catalogue)
    assert stats["methods"]["vgg16"]["index_size"] == len(catalogue)
    assert stats["methods"]["autoencoder"]["model_version"] is None

    job = service.search_and_wait(query_path, k=5)
    vgg16 = job["methods"]["vgg16"]
    assert vgg16["results"][0]["id"] == query_id
    assert vgg16["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert vgg16["higher_is_better"] is True
    assert [r["rank"] for r in vgg16["results"]] == [1, 2, 3, 4, 5]
    assert vgg16["results"][0]["thumbnail_url"].endswith(f"/images/{query_id}/thumbnail")
    autoencoder = job["methods"]["autoencoder"]
    assert (autoencoder["status"], autoencoder["reason"], autoencoder["results"]) == (
        "done",
        "not_trained",
        [],
    )

    # Train over HTTP; the job reports epoch progress while it runs. Epochs on the sample
    # catalogue can take a fraction of a second with bfloat16 units: enough of them, and
    # polls that do not wait, that one of them is seen.
    train_job_id = service.train(8, patience=8)
    second = requests.post(
        f"{service.api}/models/autoencoder/trainings", headers=service.auth, timeout=10
    )
    assert second.status_code == 409 and second.json()["error"]["job_id"] == train_job_id
    seen_epochs = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        training = requests.get(f"{service.api}/jobs/{train_job_id}", timeout=10).json()
        progress = training["methods"]["autoencoder"].get("progress", {})
        if progress.get("phase") == "training":
            seen_epochs.add(progress["epoch"])
            assert progress["val_loss"] > 0 and "eta_seconds" in progress
        if training["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert training["status"] == "done", training
    result = training["methods"]["autoencoder"]
    assert result["version"].startswith("ae-") and result["index_size"] == len(catalogue)
    assert seen_epochs, "no epoch progress was ever reported"

    # Both methods now find the query image first, and so does the fused list.
    job = service.search_and_wait(query_path, k=5)
    ranked = first_ids(job)
    assert ranked["vgg16"][0] == query_id
    assert ranked["autoencoder"][0] == query_id
    assert job["methods"]["autoencoder"]["model_version"] == result["version"]
    assert job["methods"]["autoencoder"]["higher_is_better"] is False
    assert job["fused"]["results"][0]["id"] == query_id

    # Delete: gone from every method's results and from the catalogue.
    response = requests.delete(f"{service.api}/images/{query_id}", headers=service.auth, timeout=10)
    assert response.status_code == 200 and response.json()["deleted"] is True
    job = service.search_and_wait(query_path, k=len(catalogue))
    for method, ids in first_ids(job).items():
        assert query_id not in ids, method
        assert len(ids) == len(catalogue) - 1
    assert query_id not in [r["id"] for r in job["fused"]["results"]]
    assert requests.get(f"{service.api}/images/{query_id}", timeout=5).status_code == 404
    assert (
        requests.delete(
            f"{service.api}/images/{query_id}", headers=service.auth, timeout=5
        ).status_code
        == 404
    )


def test_same_bytes_twice_make_one_entry(service, catalogue):
    path = catalogue["Garlic-0"]
    # The same id again (one id per file in a request: a repeat is a 400, test_bad_input.py).
    body = service.add_images([path], ids=["Garlic-0"])
    assert [(i["id"], i["created"]) for i in body["images"]] == [("Garlic-0", False)]
    job = service.wait(body["job_id"])
    assert job["methods"]["vgg16"]["already_indexed"] == 1
    assert (
        requests.get(f"{service.api}/stats", timeout=5).json()["catalogue_size"]
        >= len(catalogue) - 1
    )
    # No id: the content hash, stored once however often, in one request or in several.
    twice = service.add_images([path, path])
    assert len({i["id"] for i in twice["images"]}) == 1
    assert [i["created"] for i in twice["images"]][1] is False
    again = service.add_images([path])
    assert again["images"][0]["id"] == twice["images"][0]["id"]
    assert again["images"][0]["created"] is False


def test_two_replicas_see_each_others_changes(service, catalogue, sample_images):
    """The second replica searches through an HNSW graph (threshold 1), the first exactly:
    both see every add and delete, and give the same answers."""
    replica = start_worker(
        service.procs,
        "vgg16",
        ["search", "index"],
        dict(service.env, APPROXIMATE_INDEX_MIN_VECTORS="1"),
        service.log_dir,
        name="vgg16-replica",
    )
    try:
        wait_until(
            lambda: (
                len(
                    requests.get(f"{service.api}/health", timeout=5).json()["queues"][
                        "vgg16.search"
                    ]["workers"]
                )
                == 2
            ),
            180,
            "a second vgg16 replica",
        )
        new_path = sample_images["Zucchini"][2]
        service.wait(service.add_images([new_path], ids=["Zucchini-new"])["job_id"])

        def search_once(_):
            return service.search_and_wait(new_path, k=5, methods="vgg16")["methods"]["vgg16"]

        def ranked(answer):
            return [(r["id"], round(r["score"], 4)) for r in answer["results"]]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(search_once, range(16)))
        assert all(a["results"][0]["id"] == "Zucchini-new" for a in answers)
        assert len({a["worker"] for a in answers}) == 2, "both replicas should have answered"
        assert len({tuple(ranked(a)) for a in answers}) == 1, "replicas disagree"
        # The graph is built in the background after the replica's first search.
        wait_until(lambda: search_once(0)["index_kind"] == "hnsw", 60, "the replica's HNSW graph")

        requests.delete(
            f"{service.api}/images/Zucchini-new", headers=service.auth, timeout=5
        ).raise_for_status()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(search_once, range(16)))
        assert all("Zucchini-new" not in [r["id"] for r in a["results"]] for a in answers)
        assert {a["index_kind"] for a in answers} == {"exact", "hnsw"}
        assert len({tuple(ranked(a)) for a in answers}) == 1, "replicas disagree"
    finally:
        replica.terminate()
        replica.wait(30)


def test_an_image_deleted_after_a_search_still_leaves_k_results(service, catalogue):
    """The job's view drops images no longer in the catalogue before cutting to k, and the
    workers sent a margin of extra candidates for it: k results, ranked 1..k, all present."""
    job_id = service.search(catalogue["Garlic-0"], k=5, methods="vgg16")
    before = service.wait(job_id)["methods"]["vgg16"]["results"]
    assert len(before) == 5
    gone = before[0]["id"]
    requests.delete(f"{service.api}/images/{gone}", headers=service.auth, timeout=5)
    after = requests.get(f"{service.api}/jobs/{job_id}", timeout=10).json()
    results = after["methods"]["vgg16"]["results"]
    assert [r["id"] for r in results] == [r["id"] for r in before[1:]] + [results[-1]["id"]]
    assert gone not in {r["id"] for r in results} | {r["id"] for r in after["fused"]["results"]}
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]


def test_a_filtered_search_returns_k_matching_images_exactly_and_through_the_graph(
    service, sample_images
):
    """Every sample photo, labelled with its product: a label filter passes 4 of them (an
    exact scan of those), a filter every one passes is answered through the HNSW graph of
    a replica with threshold 0. Both give k results when k match, and only matching ones."""
    photos = [(product, path) for product, paths in sample_images.items() for path in paths]
    files = [("file", (path.name, path.read_bytes(), "image/jpeg")) for _, path in photos]
    data = [("id", f"filtered-{n}") for n in range(len(photos))] + [
        ("metadata", json.dumps({"label": product, "set": "samples", "n": n}))
        for n, (product, _) in enumerate(photos)
    ]
    added = requests.post(
        f"{service.api}/images", files=files, data=data, headers=service.auth, timeout=120
    )
    assert added.status_code == 202, added.text
    assert service.wait(added.json()["job_id"], timeout=600)["status"] == "done"
    # Earlier tests of this module left images of their own: gone, so that the filter on
    # "set" passes every image (a filter passing fewer makes the replica scan them exactly).
    listed = requests.get(f"{service.api}/images?limit=500", timeout=30).json()["images"]
    for image in listed:
        if not image["id"].startswith("filtered-"):
            gone = requests.delete(
                f"{service.api}/images/{image['id']}", headers=service.auth, timeout=30
            )
            assert gone.status_code == 200, gone.text
    replica = start_worker(
        service.procs,
        "vgg16",
        ["search"],
        dict(service.env, APPROXIMATE_INDEX_MIN_VECTORS="0"),
        service.log_dir,
        name="vgg16-graph-replica",
    )
    try:
        query = sample_images["Lemon"][0]

        def filtered(conditions, k):
            response = requests.post(
                f"{service.api}/searches",
                files={"file": (query.name, query.read_bytes())},
                data={"k": str(k), "methods": "vgg16", "filter": json.dumps(conditions)},
                timeout=30,
            )
            assert response.status_code == 202, response.text
            job = service.wait(response.json()["job_id"])
            assert job["status"] == "done", job
            assert job["params"]["filter"] == conditions
            return job["methods"]["vgg16"]

        kinds = set()
        deadline = time.monotonic() + 240
        while kinds != {"exact", "hnsw"} and time.monotonic() < deadline:
            everything = filtered({"set": "samples"}, 10)
            assert len(everything["results"]) == 10
            assert all(r["id"].startswith("filtered-") for r in everything["results"])
            assert everything["results"][0]["label"] == "Lemon"
            kinds.add(everything["index_kind"])
        assert kinds == {"exact", "hnsw"}, "both replicas, exact and graph, should answer"

        for _ in range(4):  # whichever replica takes it: an exact scan of the 4 garlics
            garlic = filtered({"label": "Garlic"}, 3)
            assert len(garlic["results"]) == 3
            assert {r["label"] for r in garlic["results"]} == {"Garlic"}
            assert garlic["index_kind"] == "exact"
        assert len(filtered({"label": "Garlic"}, 10)["results"]) == 4  # all there are
        plum = photos.index(("Plum", sample_images["Plum"][1]))
        one = filtered({"label": "Plum", "n": plum}, 5)
        assert [r["id"] for r in one["results"]] == [f"filtered-{plum}"]
        assert filtered({"label": "Durian"}, 5)["results"] == []
    finally:
        replica.terminate()
        replica.wait(30)
