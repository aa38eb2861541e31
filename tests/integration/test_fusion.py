"""The fused list's weights through real workers: an unlabelled catalogue keeps the default and
says why; a labelled one gets weights fitted to it, shown in /stats, /fusion and every search."""

import time

import pytest
import requests

from tests.integration.conftest import Service


def upload(service: Service, paths, labelled: bool) -> str:
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    metadata = [("metadata", f'{{"label": "{p.parent.name}"}}') for p in paths] if labelled else []
    response = requests.post(
        f"{service.api}/images", files=files, data=metadata, headers=service.auth, timeout=60
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def fusion(service: Service) -> dict:
    response = requests.get(f"{service.api}/fusion", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def next_fit(service: Service, after: float | None, timeout: float = 120) -> dict:
    """The fusion record once a fit newer than ``after`` has run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = fusion(service)
        if (record.get("fitted_at") or 0) > (after or 0):
            return record
        time.sleep(0.5)
    raise AssertionError(f"no fit after {after} within {timeout} s: {record}")


def test_fusion_weights_are_fitted_to_labelled_catalogues_only(service, sample_images):
    products = sorted(sample_images)
    unlabelled = [p for product in products[:10] for p in sample_images[product]]
    labelled = [p for product in products[10:] for p in sample_images[product]]
    assert fusion(service)["source"] == "default"
    refused = requests.post(f"{service.api}/fusion/fit", headers=service.auth, timeout=10)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_trained"
    assert requests.post(f"{service.api}/fusion/fit", timeout=10).status_code == 401

    assert service.wait(upload(service, unlabelled, labelled=False))["status"] == "done"
    assert service.wait(service.train(epochs=1), timeout=600)["status"] == "done"
    # The training fitted the fusion on its way out: no labels, so the default, and why.
    after_training = fusion(service)
    assert after_training["source"] == "default", after_training
    assert (
        f"0 of the {len(unlabelled)} indexed images carry a metadata.label"
        in (after_training["reason"])
    )
    default_weights = after_training["weights"]
    job = service.search_and_wait(unlabelled[0], k=3)
    assert job["fused"]["fit"]["source"] == "default"
    assert job["fused"]["weights"] == {
        m: default_weights.get(m, 0.0) for m in job["fused"]["weights"]
    }

    # Labelled images grow the catalogue by more than FUSION_REFIT_GROWTH: a fit runs by itself.
    assert service.wait(upload(service, labelled, labelled=True))["status"] == "done"
    next_fit(service, after_training["fitted_at"])

    # And one on request, now that every vector is in: fitted on the labelled images.
    before = fusion(service)["fitted_at"]
    asked = requests.post(f"{service.api}/fusion/fit", headers=service.auth, timeout=10)
    assert asked.status_code == 202, asked.text
    assert asked.headers["Location"].endswith("/api/v1/fusion")
    fitted = next_fit(service, before)
    assert fitted["source"] == "fitted", fitted
    assert fitted["labelled_images"] == len(labelled)
    assert fitted["classes"] == len(products) - 10
    assert set(fitted["leave_one_out"]) == {"vgg16", "autoencoder", "fused"}
    assert sum(fitted["weights"].values()) == pytest.approx(1.0)
    stats = requests.get(f"{service.api}/stats", timeout=10).json()
    assert stats["fusion"] == fitted
    job = service.search_and_wait(labelled[0], k=3)
    assert job["fused"]["fit"] == fitted
    assert job["fused"]["weights"] == {m: fitted["weights"][m] for m in job["fused"]["weights"]}
