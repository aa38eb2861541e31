"""Adding images: decode every upload, store the good ones, index them, maybe retrain."""

import logging
from typing import Any

from flask import current_app
from werkzeug.datastructures import FileStorage

from shared.contracts import ImageUpload, Rejected
from shared.images import (
    CanonicalImage,
    ImageRejected,
    canonicalize,
    default_image_id,
    validate_image_id,
)

from . import fusion_weights, jobs, model_versions
from .context import catalogue, settings
from .errors import ApiError

log = logging.getLogger(__name__)


def canonical(data: bytes) -> CanonicalImage:
    """An upload as its canonical image, decoded in one of the gateway's decode slots."""
    cfg = settings()
    with current_app.extensions["decode_slots"].slot():
        return canonicalize(
            data, max_side=cfg.stored_image_max_side, max_pixels=cfg.max_image_pixels
        )


def add_images(files: list[FileStorage], upload: ImageUpload) -> dict[str, Any]:
    """Store the files that are images and queue their indexing: the 202 body, less the
    job's links. A bad file fails alone (listed in "rejected"); if all fail, an ApiError."""
    # Every file is decoded before any is stored: a 503 for want of a decode slot leaves
    # nothing half-done (stored but never indexed).
    accepted: list[tuple[int, str, CanonicalImage]] = []
    rejected: list[Rejected] = []
    for position, file in enumerate(files):
        data = file.read()
        try:
            image_id = validate_image_id(upload.ids[position]) if upload.ids else None
            accepted.append((position, image_id or default_image_id(data), canonical(data)))
        except ImageRejected as err:
            rejected.append(
                Rejected(
                    position=position,
                    filename=file.filename,
                    code=err.code,
                    message=err.message,
                    status=err.status,
                )
            )
    if not accepted:
        raise _nothing_usable(rejected)
    stored: list[dict[str, Any]] = []
    to_index: dict[str, CanonicalImage] = {}  # the last file of an id is the one it keeps
    for position, image_id, image in accepted:
        filename = files[position].filename
        created = catalogue().put(
            image_id, image, filename=filename or None, metadata=upload.metadata_of(position)
        )
        stored.append({"id": image_id, "filename": filename, "created": created})
        to_index[image_id] = image
    job = jobs.start_indexing(to_index)
    body: dict[str, Any] = {
        "images": stored,
        "rejected": [r.model_dump(mode="json") for r in rejected],
    }
    training_job_id = model_versions.retrain_if_catalogue_grew()
    fusion_weights.refit_if_catalogue_grew()
    if training_job_id:
        body["training_job_id"] = training_job_id
    return {**body, "job_id": job.id}


def _nothing_usable(rejected: list[Rejected]) -> ApiError:
    details = [r.model_dump(mode="json") for r in rejected]
    if len(rejected) == 1:
        only = rejected[0]
        return ApiError(only.status, only.code, only.message, rejected=details)
    return ApiError(400, "no_valid_images", "none of the files could be used", rejected=details)
