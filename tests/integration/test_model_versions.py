"""Autoencoder model versions: switch under concurrent searches, rollback, training artifacts."""

import io
import json
import math
import threading
import time

import pytest
import redis
import requests
from PIL import Image

from deploy.launcher import wait_until
from shared import keys, names
from shared.celery_app import make_celery
from shared.contracts import TrainTaskPayload
from shared.jobs import JobRecord
from shared.settings import CommonSettings
from tests.helpers.images import distinct_images
from tests.integration.system import post_images, start_extra_gateway

pytestmark = pytest.mark.integration
GOOD_EPOCHS = 12


def finished_training(service, job_id) -> dict:
    job = service.wait(job_id, timeout=400)
    assert job["status"] == "done", job
    return job["methods"]["autoencoder"]


def finished_version(service, job_id) -> str:
    return finished_training(service, job_id)["version"]


@pytest.fixture(scope="module")
def versioned(service, sample_images):
    """A small catalogue with a first trained model version."""
    paths = {f"mv-{product}": photos[3] for product, photos in list(sample_images.items())[:12]}
    assert (
        service.wait(service.add_images(list(paths.values()), ids=list(paths))["job_id"])["status"]
        == "done"
    )
    first = finished_training(service, service.train(2))
    # The first version always becomes active: there is none to compare it with.
    assert first["activation"]["activated"] is True and "check" not in first["activation"]
    return paths, first["version"]


def test_switch_under_concurrent_searches_then_rollback(service, versioned, sample_images):
    paths, first = versioned
    query_id, query_path = next(iter(paths.items()))
    answers, errors = [], []
    stop = threading.Event()

    def keep_searching():
        while not stop.is_set():
            try:
                job = service.search_and_wait(query_path, k=3, methods="autoencoder")
                answers.append(job["methods"]["autoencoder"])
            except (AssertionError, requests.RequestException) as err:
                errors.append(repr(err))

    searchers = [threading.Thread(target=keep_searching) for _ in range(3)]
    for thread in searchers:
        thread.start()
    job_id = service.train(2, always_activate=True)  # whatever the activation check says
    # An image added while the new version trains must end up in both versions' indexes.
    late = sample_images["Zucchini"][1]
    service.wait(service.add_images([late], ids=["mv-late"])["job_id"])
    second = finished_version(service, job_id)
    time.sleep(1.0)  # a few searches on the new version
    stop.set()
    for thread in searchers:
        thread.join(60)

    assert errors == []
    versions = [a["model_version"] for a in answers]
    assert set(versions) == {first, second}, versions
    assert versions.index(second) > versions.index(first)
    for answer in answers:
        # One version per answer: a query embedded by one model and compared with vectors of
        # another would not find itself at (nearly) distance 0. Nearly: the query is embedded
        # alone and the catalogue in a batch, which round differently under bfloat16, and
        # float32 distances of unit vectors have a floor of about 5e-4 (vector_index).
        top, runner_up = answer["results"][:2]
        assert top["id"] == query_id
        assert top["score"] < min(1e-2, runner_up["score"] / 10), answer["results"]

    models = requests.get(f"{service.api}/models/autoencoder", timeout=5).json()
    sizes = {v["version"]: v["index_size"] for v in models["versions"]}
    assert models["active"] == second
    assert sizes[first] == sizes[second] >= len(paths) + 1

    # Rollback: the previous version answers again, complete with the late image.
    response = requests.post(
        f"{service.api}/models/autoencoder/versions/{first}/activate",
        headers=service.auth,
        timeout=5,
    )
    assert response.status_code == 200 and response.json() == {"active": first, "previous": second}
    job = service.search_and_wait(late, k=1, methods="autoencoder")
    assert job["methods"]["autoencoder"]["model_version"] == first
    assert job["methods"]["autoencoder"]["results"][0]["id"] == "mv-late"
    requests.post(
        f"{service.api}/models/autoencoder/versions/{second}/activate",
        headers=service.auth,
        timeout=5,
    ).raise_for_status()


def test_activation_errors(service, versioned):
    _, first = versioned
    url = f"{service.api}/models/autoencoder/versions"
    assert (
        requests.post(f"{url}/ae-nope/activate", headers=service.auth, timeout=5).status_code == 404
    )
    assert requests.post(f"{url}/{first}/activate", timeout=5).status_code == 401


def test_training_artifacts_are_served(service, versioned):
    _, first = versioned
    base = f"{service.api}/models/autoencoder/versions/{first}"
    curve = requests.get(f"{base}/loss-curve.png", timeout=5)
    assert curve.status_code == 200 and curve.headers["Content-Type"] == "image/png"
    assert curve.headers["X-Content-Type-Options"] == "nosniff"
    assert curve.headers["Cache-Control"] == "public, max-age=300"  # reads are open here
    assert Image.open(io.BytesIO(curve.content)).size == (640, 400)
    preview = Image.open(io.BytesIO(requests.get(f"{base}/preview.png", timeout=5).content))
    assert preview.height > preview.width / 8  # inputs above their reconstructions: two rows
    assert (
        requests.get(
            f"{service.api}/models/autoencoder/versions/nope/preview.png", timeout=5
        ).status_code
        == 404
    )


def test_retrains_on_its_own_when_the_catalogue_has_grown(service, versioned, tmp_path):
    gateway, process = start_extra_gateway(service, tmp_path, AUTOENCODER_RETRAIN_GROWTH="0.5")
    try:
        models = requests.get(f"{gateway.api}/models/autoencoder", timeout=5).json()
        active = next(v for v in models["versions"] if v["active"])
        size = requests.get(f"{gateway.api}/stats", timeout=5).json()["catalogue_size"]
        threshold = math.ceil(active["images"] * 1.5)
        images = distinct_images(threshold - size + 1, seed=41)
        ids = [f"grow-{n}" for n in range(len(images))]

        below = post_images(gateway, images[:-2], ids[:-2])
        assert below.status_code == 202 and "training_job_id" not in below.json()
        reached = post_images(gateway, images[-2:-1], ids[-2:-1])
        assert reached.status_code == 202, reached.text
        job_id = reached.json()["training_job_id"]
        job = gateway.wait(job_id, timeout=400)
        assert job["status"] == "done", job
        assert job["params"]["trigger"] == "catalogue_growth"
        retrained = job["methods"]["autoencoder"]
        assert retrained["images"] >= threshold and retrained["index_size"] >= threshold
        models = requests.get(f"{gateway.api}/models/autoencoder", timeout=5).json()
        # Active only if it passed the activation check, like any training.
        activated = retrained["activation"]["activated"]
        assert (models["active"] == retrained["version"]) is activated

        # Growth is measured from the new model now: one more image starts nothing.
        after = post_images(gateway, images[-1:], ids[-1:])
        assert after.status_code == 202 and "training_job_id" not in after.json()
    finally:
        process.terminate()
        process.wait(30)


def models_of(service) -> dict:
    return requests.get(f"{service.api}/models/autoencoder", timeout=5).json()


def test_a_worse_training_is_kept_as_a_candidate_and_a_better_one_activates(
    service, versioned, sample_images
):
    """Two labelled photos of each product make the check leave-one-out label P@1. A
    training of 1 epoch after a good one scores lower and stays a candidate (activated by
    hand later); a good training after it scores higher and becomes active by itself."""
    files, data = [], []
    for product, paths in sample_images.items():
        for n, path in enumerate(paths[:2]):
            files.append(("file", (path.name, path.read_bytes(), "image/jpeg")))
            data += [
                ("id", f"labelled-{product}-{n}"),
                ("metadata", json.dumps({"label": product})),
            ]
    added = requests.post(
        f"{service.api}/images", files=files, data=data, headers=service.auth, timeout=120
    )
    assert added.status_code == 202, added.text
    assert service.wait(added.json()["job_id"])["status"] == "done"
    good = finished_training(service, service.train(GOOD_EPOCHS, always_activate=True))
    assert good["activation"]["activated"] is True
    assert models_of(service)["active"] == good["version"]

    worse = finished_training(service, service.train(1))
    activation = worse["activation"]
    check = activation["check"]
    assert activation["activated"] is False, activation
    assert check["kind"] == "label_p_at_1" and check["images"] >= 2 * len(sample_images)
    assert check["score"] < check["active_score"] and check["active_version"] == good["version"]
    assert "candidate" in activation["reason"]
    models = models_of(service)
    assert models["active"] == good["version"] and worse["version"] not in models["building"]
    listed = next(v for v in models["versions"] if v["version"] == worse["version"])
    assert listed["active"] is False and listed["activation"] == activation
    assert listed["index_size"] == worse["index_size"]
    # The good version still answers searches.
    query = sample_images["Lemon"][0]
    job = service.search_and_wait(query, k=1, methods="autoencoder")
    assert job["methods"]["autoencoder"]["model_version"] == good["version"]

    # By hand, the candidate can still be activated (its index was kept complete) ...
    response = requests.post(
        f"{service.api}/models/autoencoder/versions/{worse['version']}/activate",
        headers=service.auth,
        timeout=5,
    )
    assert response.status_code == 200, response.text
    # ... and a good training after it beats it on the same check and activates itself.
    better = finished_training(service, service.train(GOOD_EPOCHS))
    assert better["activation"]["activated"] is True, better["activation"]
    assert better["activation"]["check"]["active_version"] == worse["version"]
    assert better["activation"]["check"]["score"] >= better["activation"]["check"]["active_score"]
    assert models_of(service)["active"] == better["version"]


def test_a_training_task_delivered_twice_runs_once(service, versioned):
    """The same task (same id, same arguments) published again after its run finished, as
    the broker was seen to do: the trainer skips it, no version is added, the stored result
    stays the first run's."""
    job_id = service.train(1, always_activate=True)
    first = finished_training(service, job_id)
    versions_before = [v["version"] for v in models_of(service)["versions"]]
    client = redis.Redis.from_url(service.env["REDIS_URL"])
    record = JobRecord.from_json(client.get(keys.job(job_id)))
    (task_id,) = record.task_ids("autoencoder")
    app = make_celery(CommonSettings(redis_url=service.env["REDIS_URL"]), "test-client")
    log = service.log_dir / "autoencoder-train.log"

    def skipped() -> int:
        lines = log.read_text(errors="replace").splitlines()
        return sum("training task delivered again" in line and task_id in line for line in lines)

    # (The broker may have delivered it again by itself already: count from here.)
    time.sleep(1.0)
    skipped_before = skipped()
    app.send_task(
        names.AUTOENCODER_TRAIN,
        args=TrainTaskPayload(
            job_id=job_id, options={"epochs": 1, "always_activate": True}
        ).as_args(),
        task_id=task_id,
        queue=app.conf.task_routes[names.AUTOENCODER_TRAIN]["queue"],
    )
    wait_until(lambda: skipped() > skipped_before, 120, "the trainer to take the second delivery")
    assert [v["version"] for v in models_of(service)["versions"]] == versions_before
    # The result backend still holds the first run's result (an ignored task stores none).
    stored = app.AsyncResult(task_id)
    assert stored.state == "SUCCESS" and stored.result["version"] == first["version"]
