"""/fusion: the fused list's weights in use, and fitting them again on request."""

from flask import jsonify, url_for

from shared.contracts import FusionFitAccepted, FusionWeights, body

from .. import fusion_weights
from ..apidoc import documented
from ..auth import read_access, require_key
from . import api


@api.get("/fusion")
@documented("getFusion", "searches", ok=(200, FusionWeights, "The weights."), errors=(401, 503))
@read_access
def get_fusion():
    """The fused list's weights in use and how they were obtained"""
    return jsonify(body(fusion_weights.in_use()))


@api.post("/fusion/fit")
@documented(
    "fitFusion",
    "searches",
    ok=(202, FusionFitAccepted, "Accepted: the fit is queued; `GET /fusion` shows it once run."),
    conflicts="`not_trained` (the fit needs the autoencoder's vectors).",
    errors=(401, 503),
)
@require_key
def fit_fusion():
    """Fit the fused list's weights to the catalogue's labels now

    Leave-one-out over the labelled catalogue images (`metadata.label`); without enough
    labels the record says why and the default FUSION_WEIGHTS stay in use.
    """
    location = url_for("api.get_fusion")
    response = jsonify({"task_id": fusion_weights.request_fit("request"), "status_url": location})
    response.status_code = 202
    response.headers["Location"] = location
    return response
