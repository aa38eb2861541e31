"""/models/autoencoder: versions, trainings, activation, training images."""

from flask import jsonify

from shared.contracts import Activated, ModelList, TrainingAccepted, TrainingOptions

from .. import model_versions
from ..answers import accepted, image_response
from ..apidoc import documented
from ..auth import read_access, require_key
from ..errors import validated
from ..inputs import json_body
from . import api


@api.post("/models/autoencoder/trainings")
@documented(
    "startTraining",
    "models",
    json=TrainingOptions,
    ok=(202, TrainingAccepted, "Accepted: the job is queued. Poll `status_url`."),
    conflicts="`training_in_progress` (the error's `job_id` is the running one) or "
    "`empty_catalogue`.",
    errors=(400, 401, 413, 503),
)
@require_key
def start_training():
    """Train a new autoencoder version on the current catalogue

    While it runs, the job's `methods.autoencoder.progress` reports each epoch's loss,
    validation loss and ETA. When done, the new version's index is complete and it answers
    searches.
    """
    options = validated(TrainingOptions, json_body(empty={}))
    return accepted({"kind": "train", "job_id": model_versions.train_on_request(options)})


@api.get("/models/autoencoder")
@documented(
    "listAutoencoderModels",
    "models",
    ok=(200, ModelList, "Newest version first."),
    errors=(401, 503),
)
@read_access
def list_autoencoder_models():
    """Autoencoder model versions, the active one, index sizes"""
    return jsonify(model_versions.version_list())


@api.post("/models/autoencoder/versions/<version>/activate")
@documented(
    "activateAutoencoderVersion",
    "models",
    ok=(200, Activated, "Activated."),
    conflicts="`version_not_ready` (still being built) or `index_incomplete` (its index "
    "lacks catalogue images).",
    errors=(401, 404, 503),
)
@require_key
def activate_autoencoder_version(version: str):
    """Make a stored version answer searches (a rollback, if older)"""
    return jsonify(model_versions.activate(version))


@api.get("/models/autoencoder/versions/<version>/<any('loss-curve', 'preview'):artifact>.png")
@documented(
    "getTraining",
    "models",
    ok=(200, None, "A PNG image."),
    binary="image/png",
    errors=(401, 404, 503),
)
@read_access
def get_training_artifact(version: str, artifact: str):
    """A training's image: the loss per epoch, or validation images over their reconstructions"""
    return image_response(model_versions.artifact(version, artifact), "image/png")
