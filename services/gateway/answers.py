"""Response shapes every route shares: 202 Accepted with the job's URL, and image bytes."""

from typing import Any

from flask import Response, jsonify, url_for

from .context import settings


def accepted(body: dict[str, Any]) -> Response:
    """202 for a queued job: the body, the job's ``status_url`` and a ``Location`` header."""
    location = url_for("api.get_job", job_id=body["job_id"])
    response = jsonify({**body, "status_url": location})
    response.status_code = 202
    response.headers["Location"] = location
    return response


def image_response(data: bytes, mimetype: str) -> Response:
    response = Response(data, mimetype=mimetype)
    # Behind READS_REQUIRE_KEY a shared cache must neither serve an image to clients without
    # the key nor keep serving it after a delete.
    private = settings().reads_require_key
    response.headers["Cache-Control"] = "private, no-store" if private else "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
