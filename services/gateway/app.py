"""Flask application factory: settings, Redis, Celery, error handling, access control.

Run:  gunicorn --threads 16 'services.gateway.app:create_app()'
"""

import hmac
import logging
from functools import wraps

import kombu.exceptions
import redis
from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from shared.catalog import Catalog
from shared.celery_app import make_celery
from shared.images import ImageRejected
from shared.logs import configure_logging

from .settings import GatewaySettings

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client can act on: status code, short code, and a sentence for a person."""

    def __init__(self, status: int, code: str, message: str, **details) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, **details):
    response = jsonify({"error": {"code": code, "message": message, **details}})
    response.status_code = status
    return response


def create_app(settings: GatewaySettings | None = None) -> Flask:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level, service="gateway")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.json.sort_keys = False
    app.extensions["settings"] = settings
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )
    app.extensions["redis"] = client
    app.extensions["catalog"] = Catalog(client)
    app.extensions["celery"] = make_celery(settings, "gateway")

    from .api import api

    app.register_blueprint(api, url_prefix="/api/v1")
    _register_error_handlers(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.code, err.message, **err.details)

    @app.errorhandler(ImageRejected)
    def _image_rejected(err: ImageRejected):
        return error_response(err.status, err.code, err.message)

    @app.errorhandler(redis.RedisError)
    def _redis_down(err: redis.RedisError):
        log.error("redis unavailable", extra={"error": str(err), "path": request.path})
        return error_response(
            503, "storage_unavailable", "the service's storage (Redis) is not reachable; try again"
        )

    @app.errorhandler(kombu.exceptions.OperationalError)
    def _broker_down(err: Exception):
        log.error("broker unavailable", extra={"error": str(err), "path": request.path})
        return error_response(
            503, "queue_unavailable", "the job queue (Redis broker) is not reachable; try again"
        )

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        messages = {
            404: "no such resource",
            405: f"method {request.method} is not allowed here",
            413: "the upload is larger than the limit of "
            f"{app.config['MAX_CONTENT_LENGTH']:,} bytes",
        }
        code = (err.name or "error").lower().replace(" ", "_")
        return error_response(err.code or 500, code, messages.get(err.code, err.description))


def settings() -> GatewaySettings:
    return current_app.extensions["settings"]


def _check_key() -> None:
    expected = settings().api_key
    if expected is None:
        return
    given = request.headers.get("X-API-Key", "")
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "a valid X-API-Key header is required for this request")


def require_key(view):
    """Writes: need the API key whenever one is configured."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        _check_key()
        return view(*args, **kwargs)

    return wrapper


def read_access(view):
    """Reads: open, unless READS_REQUIRE_KEY closes them."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if settings().reads_require_key:
            _check_key()
        return view(*args, **kwargs)

    return wrapper
