"""The OpenAPI 3 description of /api/v1, and the docs page that renders it without internet.

The spec is a plain dict built from the gateway's settings (so limits such as ``MAX_K`` are
the ones in force) and served at ``/api/v1/openapi.json``. ``/api/v1/docs`` is Swagger UI,
served from the assets inside the pinned ``flask-swagger-ui`` wheel: no CDN, no fetch from
outside the gateway. tests/integration/test_openapi.py checks that every route of api.py is
described here and runs schemathesis against a live gateway.
"""

from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Response, abort, current_app, jsonify, send_from_directory

from shared import names
from shared.images import IMAGE_ID_PATTERN

from .settings import GatewaySettings

API_PREFIX = "/api/v1"
WEB_DIR = Path(__file__).resolve().parent / "web"
SWAGGER_UI_DIR = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
SWAGGER_UI_FILES = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}
)
# Swagger UI styles its widgets inline and draws icons as data: URIs; nothing else is allowed.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)

docs = Blueprint("docs", __name__)


# Small builders, so each operation below reads like its documentation.
def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _binary(description: str, media_type: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
    }


def _accepted(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "Accepted: the job is queued. Poll `status_url` (also in `Location`).",
        "headers": {
            "Location": {
                "description": "The job's URL, `/api/v1/jobs/{job_id}`.",
                "required": True,
                "schema": {"type": "string"},
            }
        },
        "content": _json(schema),
    }


ERROR_RESPONSES = {
    400: ("BadRequest", "Bad input: the message says which field and why."),
    401: ("Unauthorized", "Missing or wrong `X-API-Key`."),
    404: ("NotFound", "Unknown id (or expired job)."),
    409: ("Conflict", "The request conflicts with the current state; the code says which."),
    413: (
        "TooLarge",
        "The request or an image is too large; the message names the limit that was hit "
        "(body bytes, a form field, form parts, files, pixels or JSON bytes).",
    ),
    415: ("NotAnImage", "The file is not an image the service can decode."),
    503: (
        "Unavailable",
        "Redis or the job queue is not reachable, or (`busy`, with `Retry-After`) every image "
        "decode slot stayed taken; try again.",
    ),
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
        for status in statuses
    }


WRITE = [{"ApiKey": []}]
# Reads are open unless the gateway runs with READS_REQUIRE_KEY=true.
READ = [{}, {"ApiKey": []}]


def _path_param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


IMAGE_ID = _path_param(
    "image_id", "An image id of the catalogue.", pattern=IMAGE_ID_PATTERN.pattern
)
JOB_ID = _path_param("job_id", "A job id, as returned with 202 Accepted.")
VERSION = _path_param(
    "version", "An autoencoder model version, e.g. `ae-20261127T031500Z-1a2b3c4d`."
)


NULLABLE_STRING = {"type": "string", "nullable": True}


def _schemas() -> dict[str, Any]:
    links = {
        "url": {"type": "string", "description": "The image's metadata."},
        "image_url": {"type": "string", "description": "The canonical JPEG."},
        "thumbnail_url": {"type": "string", "description": "A JPEG at most 160 px."},
    }
    statuses = ["queued", "running", "done", "failed"]
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "example": "not_an_image"},
                        "message": {"type": "string", "description": "A sentence for a person."},
                        "rejected": {
                            "type": "array",
                            "description": "POST /images: why each file was refused.",
                            "items": _ref("Rejected"),
                        },
                        "job_id": {
                            "type": "string",
                            "description": "409 training_in_progress: the running training.",
                        },
                    },
                    "additionalProperties": True,
                }
            },
        },
        "Image": {
            "type": "object",
            "required": ["id", "label", "width", "height", "added_at", "metadata", *links],
            "properties": {
                "id": {"type": "string", "example": "3f1b0c7e9a2d4b6c8e0f1a2b3c4d5e6f"},
                "label": {
                    "type": "string",
                    "description": "What a person calls the image: metadata.label, else the "
                    "file name, else the id.",
                },
                "filename": NULLABLE_STRING,
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "added_at": {"type": "number", "description": "Unix time."},
                "metadata": {"type": "object", "additionalProperties": True},
                **links,
            },
        },
        "ImageList": {
            "type": "object",
            "required": ["total", "offset", "limit", "images"],
            "properties": {
                "total": {"type": "integer", "description": "Images in the catalogue."},
                "offset": {"type": "integer"},
                "limit": {"type": "integer"},
                "images": {"type": "array", "items": _ref("Image")},
            },
        },
        "Rejected": {
            "type": "object",
            "required": ["position", "code", "message", "status"],
            "properties": {
                "position": {"type": "integer", "description": "0-based index of the file."},
                "filename": NULLABLE_STRING,
                "code": {"type": "string"},
                "message": {"type": "string"},
                "status": {"type": "integer", "description": "The status it alone would get."},
            },
        },
        "IndexAccepted": {
            "type": "object",
            "required": ["images", "rejected", "job_id", "status_url"],
            "properties": {
                "images": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "created"],
                        "properties": {
                            "id": {"type": "string"},
                            "filename": NULLABLE_STRING,
                            "created": {
                                "type": "boolean",
                                "description": "false when the id was already stored.",
                            },
                        },
                    },
                },
                "rejected": {"type": "array", "items": _ref("Rejected")},
                "job_id": {"type": "string"},
                "status_url": {"type": "string"},
                "training_job_id": {
                    "type": "string",
                    "description": "Set when this upload grew the catalogue enough to start "
                    "an autoencoder training (AUTOENCODER_RETRAIN_GROWTH).",
                },
            },
        },
        "SearchAccepted": {
            "type": "object",
            "required": ["kind", "methods", "k", "job_id", "status_url"],
            "properties": {
                "kind": {"type": "string", "enum": ["search"]},
                "methods": {"type": "array", "items": {"type": "string", "enum": names.METHODS}},
                "k": {"type": "integer"},
                "job_id": {"type": "string"},
                "status_url": {"type": "string"},
            },
        },
        "TrainingAccepted": {
            "type": "object",
            "required": ["kind", "job_id", "status_url"],
            "properties": {
                "kind": {"type": "string", "enum": ["train"]},
                "job_id": {"type": "string"},
                "status_url": {"type": "string"},
            },
        },
        "Result": {
            "type": "object",
            "required": ["id", "score", "rank"],
            "properties": {
                "id": {"type": "string"},
                "score": {
                    "type": "number",
                    "description": "vgg16: cosine similarity; autoencoder: Euclidean distance; "
                    "fused: weighted reciprocal rank fusion, sum of weight / (60 + rank). "
                    "See `higher_is_better`.",
                },
                "rank": {"type": "integer", "minimum": 1},
                "ranks": {
                    "type": "object",
                    "description": "Fused results: the rank in each method's list.",
                    "additionalProperties": {"type": "integer"},
                },
                "label": {
                    "type": "string",
                    "description": "What a person calls the image: metadata.label, else the "
                    "file name, else the id.",
                },
                "filename": NULLABLE_STRING,
                **links,
            },
        },
        "TrainingProgress": {
            "type": "object",
            "description": "A running training: `phase` is loading, training or embedding.",
            "properties": {
                "phase": {"type": "string", "example": "training"},
                "epoch": {"type": "integer"},
                "epochs": {"type": "integer", "description": "The maximum; may stop earlier."},
                "loss": {"type": "number"},
                "val_loss": {"type": "number"},
                "seconds": {"type": "number"},
                "eta_seconds": {"type": "number"},
                "images": {"type": "integer"},
                "embedded": {"type": "integer"},
                "version": {"type": "string"},
                "updated_at": {"type": "number"},
            },
            "additionalProperties": True,
        },
        "MethodOutcome": {
            "type": "object",
            "description": "One method's part of a job. Searches carry `results`; a method "
            "without a model says `reason: not_trained` and a `message`, with no results; one "
            "not finished by the job's deadline is `failed` with `reason: timeout`.",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": statuses},
                "error": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "string"}},
                "reason": {
                    "type": "string",
                    "example": "not_trained",
                    "description": "`not_trained` (no model yet) or `timeout` (past the "
                    "job's deadline).",
                },
                "message": {"type": "string"},
                "progress": _ref("TrainingProgress"),
                "model_version": {"type": "string"},
                "metric": {"type": "string", "enum": ["cosine", "euclidean"]},
                "higher_is_better": {"type": "boolean"},
                "index_size": {"type": "integer"},
                "index_kind": {
                    "type": "string",
                    "enum": ["exact", "hnsw"],
                    "description": "Searches: exact scan, or HNSW candidates re-ranked exactly.",
                },
                "worker": {"type": "string"},
                "results": {"type": "array", "items": _ref("Result")},
                "timings_ms": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                },
                "parts": {"type": "integer", "description": "Indexing tasks of a large upload."},
                "parts_done": {"type": "integer"},
                "requested": {"type": "integer"},
                "embedded": {"type": "integer"},
                "already_indexed": {"type": "integer"},
                "gone": {"type": "integer", "description": "Deleted before being embedded."},
                "version": {"type": "string", "description": "Trainings: the new version."},
            },
            "additionalProperties": True,
        },
        "Job": {
            "type": "object",
            "required": ["id", "kind", "status", "created_at", "params", "methods"],
            "properties": {
                "id": {"type": "string"},
                "kind": {"type": "string", "enum": ["search", "index", "train"]},
                "status": {
                    "type": "string",
                    "enum": statuses,
                    "description": "done once every method finished and one succeeded.",
                },
                "created_at": {"type": "number"},
                "deadline": {
                    "type": "number",
                    "nullable": True,
                    "description": "Unix time after which an unfinished job is `failed` with "
                    "`reason: timeout` (JOB_DEADLINE_SECONDS).",
                },
                "reason": {
                    "type": "string",
                    "enum": ["timeout"],
                    "description": "Why a failed job failed, when its methods agree.",
                },
                "message": {"type": "string"},
                "params": {"type": "object", "additionalProperties": True},
                "methods": {"type": "object", "additionalProperties": _ref("MethodOutcome")},
                "fused": {
                    "type": "object",
                    "description": "Searches: one list combining the methods' rankings.",
                    "required": ["method", "higher_is_better", "methods", "weights", "results"],
                    "properties": {
                        "method": {"type": "string", "enum": ["weighted_reciprocal_rank_fusion"]},
                        "higher_is_better": {"type": "boolean"},
                        "methods": {"type": "array", "items": {"type": "string"}},
                        "weights": {
                            "type": "object",
                            "description": "Each method's weight (FUSION_WEIGHTS).",
                            "additionalProperties": {"type": "number"},
                        },
                        "results": {"type": "array", "items": _ref("Result")},
                    },
                },
            },
        },
        "ModelVersion": {
            "type": "object",
            "required": ["version", "active", "index_size", "loss_curve_url", "preview_url"],
            "properties": {
                "version": {"type": "string"},
                "active": {"type": "boolean"},
                "index_size": {"type": "integer"},
                "loss_curve_url": {"type": "string"},
                "preview_url": {"type": "string"},
                "created_at": {"type": "number"},
                "best_val_loss": {"type": "number"},
                "best_epoch": {"type": "integer"},
                "epochs_run": {"type": "integer"},
                "images": {"type": "integer"},
                "stopped": {"type": "string"},
            },
            "additionalProperties": True,
        },
        "Models": {
            "type": "object",
            "required": ["active", "building", "versions"],
            "properties": {
                "active": NULLABLE_STRING,
                "building": {"type": "array", "items": {"type": "string"}},
                "versions": {"type": "array", "items": _ref("ModelVersion")},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
                "redis": {"type": "string"},
                "missing": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "queues that no live worker consumes",
                },
                "message": {"type": "string"},
                "queues": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["workers", "waiting"],
                        "properties": {
                            "workers": {"type": "array", "items": {"type": "string"}},
                            "waiting": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "Stats": {
            "type": "object",
            "required": ["catalogue_size", "methods"],
            "properties": {
                "catalogue_size": {"type": "integer"},
                "methods": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["model_version", "index_size", "building"],
                        "properties": {
                            "model_version": NULLABLE_STRING,
                            "index_size": {"type": "integer"},
                            "building": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                        },
                    },
                },
            },
        },
    }


def _paths(settings: GatewaySettings) -> dict[str, Any]:
    image_files = {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": f"One or more images (at most {settings.max_files_per_request}).",
    }
    artifact = {
        "loss-curve": "The training and validation loss per epoch.",
        "preview": "Validation images (top) and their reconstructions (bottom).",
    }
    return {
        "/images": {
            "post": {
                "tags": ["images"],
                "operationId": "addImages",
                "summary": "Add images to the catalogue and index them with every method",
                "description": "Each file is validated and stored as a canonical JPEG. A bad "
                "file fails alone and is listed in `rejected`; the others are stored. Without "
                "`id`, an image's id is its content hash, so the same bytes are stored once.",
                "security": WRITE,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": image_files,
                                    "id": {
                                        "type": "array",
                                        "description": "One id per file, or none.",
                                        "items": {
                                            "type": "string",
                                            "pattern": IMAGE_ID_PATTERN.pattern,
                                        },
                                    },
                                    "metadata": {
                                        "type": "array",
                                        "description": "JSON objects (at most 16 KiB each): "
                                        "one for all files, or one per file.",
                                        "items": {"type": "string"},
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _accepted(_ref("IndexAccepted")),
                    **_errors(400, 401, 413, 415, 503),
                },
            },
            "get": {
                "tags": ["images"],
                "operationId": "listImages",
                "summary": "List the catalogue, in the order images were added",
                "security": READ,
                "parameters": [
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                ],
                "responses": {
                    "200": _ok("A page of the catalogue.", _ref("ImageList")),
                    **_errors(400, 401, 503),
                },
            },
        },
        "/images/lookup": {
            "post": {
                "tags": ["images"],
                "operationId": "lookupImages",
                "summary": "Which of the given ids are in the catalogue",
                "description": "Bulk clients use it to skip images already stored.",
                "security": READ,
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "required": ["ids"],
                            "properties": {
                                "ids": {
                                    "type": "array",
                                    "maxItems": 10_000,
                                    "items": {"type": "string"},
                                }
                            },
                        }
                    ),
                },
                "responses": {
                    "200": _ok(
                        "The ids found, in the order given.",
                        {
                            "type": "object",
                            "required": ["existing"],
                            "properties": {
                                "existing": {"type": "array", "items": {"type": "string"}}
                            },
                        },
                    ),
                    **_errors(400, 401, 413, 503),
                },
            }
        },
        "/images/{image_id}": {
            "parameters": [IMAGE_ID],
            "get": {
                "tags": ["images"],
                "operationId": "getImage",
                "summary": "An image's metadata and links",
                "security": READ,
                "responses": {"200": _ok("The image.", _ref("Image")), **_errors(401, 404, 503)},
            },
            "delete": {
                "tags": ["images"],
                "operationId": "deleteImage",
                "summary": "Delete an image from the catalogue and from every index",
                "description": "Takes effect at once: no later search returns it.",
                "security": WRITE,
                "responses": {
                    "200": _ok(
                        "Deleted.",
                        {
                            "type": "object",
                            "required": ["id", "deleted"],
                            "properties": {
                                "id": {"type": "string"},
                                "deleted": {"type": "boolean", "enum": [True]},
                            },
                        },
                    ),
                    **_errors(401, 404, 503),
                },
            },
        },
        "/images/{image_id}/content": {
            "parameters": [IMAGE_ID],
            "get": {
                "tags": ["images"],
                "operationId": "getImageContent",
                "summary": "The stored canonical JPEG (at most 512 px by default)",
                "security": READ,
                "responses": {
                    "200": _binary("The image.", "image/jpeg"),
                    **_errors(401, 404, 503),
                },
            },
        },
        "/images/{image_id}/thumbnail": {
            "parameters": [IMAGE_ID],
            "get": {
                "tags": ["images"],
                "operationId": "getThumbnail",
                "summary": "A thumbnail JPEG (at most 160 px)",
                "security": READ,
                "responses": {
                    "200": _binary("The thumbnail.", "image/jpeg"),
                    **_errors(401, 404, 503),
                },
            },
        },
        "/searches": {
            "post": {
                "tags": ["searches"],
                "operationId": "createSearch",
                "summary": "Search the catalogue for images similar to a photo",
                "description": "Answers 202 at once; the job's `methods` hold each method's "
                "ranked `results` and `fused` one combined list. Until an autoencoder model "
                "exists its entry is `done` with `reason: not_trained` and no results.",
                "security": READ,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {
                                        "type": "string",
                                        "format": "binary",
                                        "description": "The query photo (exactly one).",
                                    },
                                    "k": {
                                        "type": "integer",
                                        "minimum": 1,
                                        "maximum": settings.max_k,
                                        "default": settings.default_k,
                                        "description": "Results per method.",
                                    },
                                    "methods": {
                                        "type": "string",
                                        "description": "Comma-separated subset of "
                                        f"{', '.join(names.METHODS)} (default: all).",
                                        "example": ",".join(names.METHODS),
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _accepted(_ref("SearchAccepted")),
                    **_errors(400, 401, 413, 415, 503),
                },
            }
        },
        "/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": {
                "tags": ["jobs"],
                "operationId": "getJob",
                "summary": "A job's status and, when done, its results",
                "security": READ,
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "description": "Hold the request up to this many seconds until the "
                        f"job is done (longer values are cut to {settings.max_wait_seconds:g}).",
                        "schema": {"type": "number", "minimum": 0, "default": 0},
                    }
                ],
                "responses": {
                    "200": _ok("The job.", _ref("Job")),
                    **_errors(400, 401, 404, 503),
                },
            },
        },
        "/models/autoencoder": {
            "get": {
                "tags": ["models"],
                "operationId": "listAutoencoderModels",
                "summary": "Autoencoder model versions, the active one, index sizes",
                "security": READ,
                "responses": {
                    "200": _ok("Newest version first.", _ref("Models")),
                    **_errors(401, 503),
                },
            }
        },
        "/models/autoencoder/trainings": {
            "post": {
                "tags": ["models"],
                "operationId": "startTraining",
                "summary": "Train a new autoencoder version on the current catalogue",
                "description": "While it runs, the job's `methods.autoencoder.progress` "
                "reports each epoch's loss, validation loss and ETA. When done, the new "
                "version's index is complete and it answers searches.",
                "security": WRITE,
                "requestBody": {
                    "required": False,
                    "content": _json(
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "epochs": {"type": "integer", "minimum": 1, "maximum": 500},
                                "patience": {"type": "integer", "minimum": 1, "maximum": 100},
                            },
                            "example": {"epochs": 30},
                        }
                    ),
                },
                "responses": {
                    "202": _accepted(_ref("TrainingAccepted")),
                    "409": {
                        "description": "`training_in_progress` (the error's `job_id` is the "
                        "running one) or `empty_catalogue`.",
                        "content": _json(_ref("Error")),
                    },
                    **_errors(400, 401, 413, 503),
                },
            }
        },
        "/models/autoencoder/versions/{version}/activate": {
            "parameters": [VERSION],
            "post": {
                "tags": ["models"],
                "operationId": "activateAutoencoderVersion",
                "summary": "Make a stored version answer searches (a rollback, if older)",
                "security": WRITE,
                "responses": {
                    "200": _ok(
                        "Activated.",
                        {
                            "type": "object",
                            "required": ["active"],
                            "properties": {
                                "active": {"type": "string"},
                                "previous": NULLABLE_STRING,
                            },
                        },
                    ),
                    "409": {
                        "description": "`version_not_ready` (still being built) or "
                        "`index_incomplete` (its index lacks catalogue images).",
                        "content": _json(_ref("Error")),
                    },
                    **_errors(401, 404, 503),
                },
            },
        },
        **{
            f"/models/autoencoder/versions/{{version}}/{name}.png": {
                "parameters": [VERSION],
                "get": {
                    "tags": ["models"],
                    "operationId": "getTraining" + name.title().replace("-", ""),
                    "summary": description,
                    "security": READ,
                    "responses": {
                        "200": _binary("A PNG image.", "image/png"),
                        **_errors(401, 404, 503),
                    },
                },
            }
            for name, description in artifact.items()
        },
        "/health": {
            "get": {
                "tags": ["operations"],
                "operationId": "health",
                "summary": "Redis reachable; live workers and waiting tasks per queue",
                "description": "`degraded` when a queue has no live worker (named in "
                "`missing`). Always open; when reads need the key, a request without it gets "
                "only `status`.",
                "security": [],
                "responses": {
                    "200": _ok("Redis answers.", _ref("Health")),
                    "503": _ok(
                        "Redis is not reachable.",
                        {"anyOf": [_ref("Health"), _ref("Error")]},
                    ),
                },
            }
        },
        "/stats": {
            "get": {
                "tags": ["operations"],
                "operationId": "stats",
                "summary": "Catalogue size; index size and model version per method",
                "security": READ,
                "responses": {
                    "200": _ok("Statistics.", _ref("Stats")),
                    **_errors(401, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["operations"],
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _ok("OpenAPI 3.0 document.", {"type": "object"})},
            }
        },
        "/docs": {
            "get": {
                "tags": ["operations"],
                "operationId": "docs",
                "summary": "This document, readable (Swagger UI, served offline)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "An HTML page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


# RATE_LIMIT_PER_MINUTE (off by default) answers 429 on every /api/v1 route but these.
NOT_RATE_LIMITED = frozenset({"/health", "/openapi.json", "/docs"})
RATE_LIMITED = {
    "description": "Too many requests in this minute (only with RATE_LIMIT_PER_MINUTE set).",
    "headers": {
        "Retry-After": {
            "description": "Seconds until the next minute's budget.",
            "required": True,
            "schema": {"type": "integer"},
        }
    },
    "content": _json(_ref("Error")),
}


def _with_rate_limit(paths: dict[str, Any]) -> dict[str, Any]:
    for path, item in paths.items():
        if path in NOT_RATE_LIMITED:
            continue
        for method, operation in item.items():
            if method != "parameters":
                operation["responses"]["429"] = {"$ref": "#/components/responses/RateLimited"}
    return paths


def build_spec(settings: GatewaySettings) -> dict[str, Any]:
    """The OpenAPI document of /api/v1, with the limits these settings put in force."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Image similarity search",
            "version": "1.0.0",
            "description": "Send a photo, get back the most similar images of your "
            "catalogue, found by two methods side by side (vgg16: cosine similarity of "
            "VGG16 ImageNet features; autoencoder: Euclidean distance in the latent space of "
            "an autoencoder trained on the catalogue) and one fused list.\n\n"
            "Searches, indexing and trainings are jobs: the request answers `202 Accepted` "
            "with a `job_id` and a `Location` header; poll `GET /jobs/{job_id}?wait=10`.\n\n"
            'Errors are JSON `{"error": {"code": "...", "message": "..."}}`. Writes '
            "need the API key in `X-API-Key`; reads need it only when the gateway runs with "
            "`READS_REQUIRE_KEY=true`. With `RATE_LIMIT_PER_MINUTE` set, a client over its "
            "budget gets 429 with `Retry-After`.",
        },
        "servers": [{"url": API_PREFIX}],
        "tags": [
            {"name": "searches", "description": "Find similar images."},
            {"name": "jobs", "description": "Follow searches, indexing and trainings."},
            {"name": "images", "description": "The catalogue."},
            {"name": "models", "description": "Autoencoder versions and trainings."},
            {"name": "operations", "description": "Health, statistics, this document."},
        ],
        "paths": _with_rate_limit(_paths(settings)),
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": _schemas(),
            "responses": {
                **{
                    name: {"description": description, "content": _json(_ref("Error"))}
                    for name, description in ERROR_RESPONSES.values()
                },
                "RateLimited": RATE_LIMITED,
            },
        },
    }


@docs.get(f"{API_PREFIX}/openapi.json")
def openapi_json():
    spec = current_app.extensions.get("openapi_spec")
    if spec is None:
        spec = current_app.extensions["openapi_spec"] = build_spec(
            current_app.extensions["settings"]
        )
    return jsonify(spec)


@docs.get(f"{API_PREFIX}/docs")
def docs_page():
    response = send_from_directory(WEB_DIR, "docs.html", mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@docs.get("/vendor/swagger-ui/<filename>")
def swagger_ui_asset(filename: str) -> Response:
    """The few Swagger UI files the docs page uses, from the pinned wheel."""
    if filename not in SWAGGER_UI_FILES:
        abort(404)
    return send_from_directory(SWAGGER_UI_DIR, filename, max_age=24 * 3600)
