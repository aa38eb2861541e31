"""The /api/v1 routes, one module per resource. Each view reads its input, calls one
function, and answers; the functions live in the gateway's modules (jobs, uploads,
model_versions, operations, fusion_weights), the shapes in shared/contracts.py."""

from flask import Blueprint

api = Blueprint("api", __name__)

# Importing the modules registers their routes on ``api``.
from . import fusion, images, jobs, models, operations, searches  # noqa: E402, F401
