"""Autoencoder model versions: the retraining policy, trainings on request, activation rules
and the version list. Plain functions the routes call; a test can call them without HTTP."""

import json
import logging
from typing import Any

from flask import url_for

from shared import keys
from shared.contracts import TrainingOptions
from shared.index_store import IndexStore
from shared.model_store import ModelStore

from . import fusion_weights, jobs
from .context import catalogue, index_store, redis_client, settings
from .errors import ApiError

log = logging.getLogger(__name__)
METHOD = "autoencoder"


def retrain_if_catalogue_grew() -> str | None:
    """Queue an autoencoder training once the catalogue holds AUTOENCODER_RETRAIN_GROWTH more
    images than the active model was trained on; the training's job id, or None.

    Measured from the larger of that count and the catalogue size at the last automatic
    start, so a training that fails is retried after the next step of growth, not on every
    upload. Nothing happens before a first model exists: that one is trained on request.
    """
    growth = settings().autoencoder_retrain_growth
    if growth <= 0:
        return None
    client = redis_client()
    active = IndexStore(client).versions(METHOD).active
    if active is None:
        return None
    meta, last_start = client.mget(
        [keys.model_meta(METHOD, active), keys.retrain_started_at_size(METHOD)]
    )
    trained_on = json.loads(meta or "{}").get("images", 0)
    size = catalogue().size()
    if size < max(trained_on, int(last_start or 0)) * (1 + growth):
        return None
    job_id = jobs.start_training({}, trigger="catalogue_growth")
    if job_id is not None:
        client.set(keys.retrain_started_at_size(METHOD), size)
        log.info(
            "automatic retraining queued",
            extra={"job_id": job_id, "catalogue": size, "trained_on": trained_on},
        )
    return job_id


def train_on_request(options: TrainingOptions) -> str:
    """Start a training a client asked for; its job id. 409 when it cannot start."""
    if catalogue().size() == 0:
        raise ApiError(409, "empty_catalogue", "add images before training the autoencoder")
    job_id = jobs.start_training(options.model_dump(exclude_unset=True))
    if job_id is None:
        running = jobs.running_training()
        raise ApiError(409, "training_in_progress", "a training is already running", job_id=running)
    return job_id


def known_version(version: str) -> str:
    if not ModelStore(redis_client()).is_stored(METHOD, version):
        raise ApiError(404, "version_not_found", f"no autoencoder model version {version!r}")
    return version


def activate(version: str) -> dict[str, Any]:
    """Switch searches to a stored version (a rollback when it is an older one)."""
    store = index_store()
    versions = store.versions(METHOD)
    known_version(version)
    if version in versions.building:
        raise ApiError(409, "version_not_ready", f"version {version!r} is still being built")
    if version not in versions.retained:
        indexed, catalogue_size = store.size(METHOD, version), catalogue().size()
        if indexed < catalogue_size:
            raise ApiError(
                409,
                "index_incomplete",
                f"version {version!r} has vectors for {indexed} of {catalogue_size} images; "
                "train again instead",
            )
    previous = versions.active
    if previous != version:
        store.activate(METHOD, version, previous=previous)
        fusion_weights.request_fit("activation")  # the weights were fitted to the other model
    log.info("model activated", extra={"version": version, "previous": previous})
    return {"active": version, "previous": previous}


def version_list() -> dict[str, Any]:
    """Every stored version, newest first, with its index size and training record."""
    client = redis_client()
    store = index_store()
    active, building, _ = store.versions(METHOD)
    models = ModelStore(client)
    versions = models.versions(METHOD)
    metas = models.metas(METHOD, versions)
    return {
        "active": active,
        "building": building,
        # Whoever started it: the page follows this job in the Model view and search column.
        "training_job_id": jobs.running_training() or None,
        "versions": [
            {
                "version": version,
                "active": version == active,
                "index_size": store.size(METHOD, version),
                "loss_curve_url": _artifact_url(version, "loss-curve"),
                "preview_url": _artifact_url(version, "preview"),
                **{k: v for k, v in meta.items() if k != "history"},
            }
            for version, meta in zip(versions, metas, strict=True)
        ],
    }


def _artifact_url(version: str, artifact: str) -> str:
    return url_for("api.get_training_artifact", version=version, artifact=artifact)


def artifact(version: str, artifact: str) -> bytes:
    """A training's PNG: ``loss-curve`` or ``preview``."""
    name = {"loss-curve": "loss_curve", "preview": "preview"}[artifact]
    data = ModelStore(redis_client()).artifact(METHOD, known_version(version), name)
    if data is None:
        raise ApiError(404, "artifact_not_found", f"version {version!r} has no {artifact} image")
    return data
