"""Flask application factory: settings, Redis, Celery, error handling, access control.

Run:  python -m services.gateway  (the waitress server, services/gateway/__main__.py)
"""

import hashlib
import hmac
import json
import logging
import math
import time
from functools import wraps
from typing import Any

import kombu.exceptions
import redis
from flask import Flask, Request, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from shared import keys
from shared.catalog import Catalog
from shared.celery_app import make_celery
from shared.images import ImageRejected
from shared.logs import configure_logging
from shared.settings import redis_client

from .decoding import DecodersBusy, DecodeSlots, unmap_large_allocations
from .settings import GatewaySettings
from .waiting import WaitSlots

log = logging.getLogger(__name__)

# A text field of a multipart form (an id, 'metadata', k) is kept in memory whole; 'metadata'
# may be 16 KiB. Werkzeug reads 64 KiB at a time and checks its buffer against the same
# limit, so the limit must sit well above that.
MAX_FORM_FIELD_BYTES = 256 * 1024


class ApiError(Exception):
    """An error a client can act on: status code, short code, and a sentence for a person."""

    def __init__(self, status: int, code: str, message: str, **details) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, **details):
    response = jsonify({"error": {"code": code, "message": message, **details}})
    response.status_code = status
    return response


class FormLimitExceeded(RequestEntityTooLarge):
    """A multipart form over one of werkzeug's form limits, saying which one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error_code, self.message = code, message


class _FormParser(FormDataParser):
    """Werkzeug's form parser; its 413s say which form limit was hit (werkzeug's own say
    only "too large", which the gateway used to report as the body limit)."""

    def _parse_multipart(self, stream, mimetype, content_length, options):
        try:
            return super()._parse_multipart(stream, mimetype, content_length, options)
        except RequestEntityTooLarge as err:
            raise _which_form_limit(err, self.max_form_parts, self.max_form_memory_size) from err


def _which_form_limit(err: RequestEntityTooLarge, parts: int | None, field: int | None):
    """The limit behind werkzeug's 413, told by where it was raised: the multipart decoder
    counts parts in next_event() and measures fields in receive_data() and the parser's
    parse(); anything else (the body limit) stays as it was."""
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = frame.tb_frame.f_code.co_name if frame is not None else ""
    if where == "next_event" and parts is not None:
        return FormLimitExceeded(
            "too_many_parts",
            f"the form has more than the limit of {parts:,} parts (files and fields)",
        )
    if where in ("receive_data", "parse") and field is not None:
        return FormLimitExceeded(
            "form_field_too_large",
            f"a form field is larger than the limit of {field:,} bytes "
            "('metadata' may be at most 16 KiB)",
        )
    return err


class GatewayRequest(Request):
    form_data_parser_class = _FormParser


def create_app(settings: GatewaySettings | None = None) -> Flask:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level, service="gateway")
    app = Flask(__name__)
    app.request_class = GatewayRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_FIELD_BYTES
    # A file, an id and a 'metadata' field per file, and a few fields for the request.
    app.config["MAX_FORM_PARTS"] = 3 * settings.max_files_per_request + 8
    app.json.sort_keys = False
    app.extensions["settings"] = settings
    client = redis_client(settings)
    app.extensions["redis"] = client
    app.extensions["catalog"] = Catalog(client)
    app.extensions["celery"] = make_celery(settings, "gateway")
    app.extensions["wait_slots"] = WaitSlots(settings.max_waiting_requests)
    app.extensions["decode_slots"] = DecodeSlots(
        settings.max_concurrent_decodes, settings.decode_wait_seconds
    )
    unmap_large_allocations()  # a decode's memory goes back to the system when it ends

    from .api import api
    from .metrics import init_metrics
    from .openapi import docs
    from .web import web

    app.register_blueprint(api, url_prefix="/api/v1")
    app.register_blueprint(docs)  # /api/v1/openapi.json, /api/v1/docs
    app.register_blueprint(web)  # the web page at /
    init_metrics(app)  # /metrics
    _register_error_handlers(app)
    _register_rate_limit(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.code, err.message, **err.details)

    @app.errorhandler(ImageRejected)
    def _image_rejected(err: ImageRejected):
        return error_response(err.status, err.code, err.message)

    @app.errorhandler(FormLimitExceeded)
    def _form_limit(err: FormLimitExceeded):
        return error_response(413, err.error_code, err.message)

    @app.errorhandler(DecodersBusy)
    def _decoders_busy(err: DecodersBusy):
        response = error_response(
            503,
            "busy",
            f"the gateway is decoding as many images as it may at once and none finished "
            f"within {err.waited:g} s; try again in {err.retry_after} s",
        )
        response.headers["Retry-After"] = str(err.retry_after)
        return response

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


def _register_rate_limit(app: Flask) -> None:
    """RATE_LIMIT_PER_MINUTE: a fixed one-minute window per API key, else per client address."""
    limit = app.extensions["settings"].rate_limit_per_minute
    if not limit:
        return

    @app.before_request
    def _count_request():
        if request.blueprint != "api" or request.endpoint == "api.health":
            return None
        now = time.time()
        minute = int(now // 60)
        key = keys.rate_limit(_client_identity(), minute)
        pipe = current_app.extensions["redis"].pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 120)  # the window's key outlives its minute, then goes
        count, _ = pipe.execute()
        if count <= limit:
            return None
        retry_after = max(1, math.ceil((minute + 1) * 60 - now))
        response = error_response(
            429,
            "rate_limited",
            f"more than {limit} requests in one minute from this client; "
            f"try again in {retry_after} s",
        )
        response.headers["Retry-After"] = str(retry_after)
        return response


def _client_identity() -> str:
    """Who a request counts against: its API key when valid (hashed: no secret in Redis
    keys), else its address, so that sending made-up keys never buys a fresh budget."""
    given = given_key()
    if given and settings().api_key is not None and key_is_valid(given):
        return "key-" + hashlib.sha256(given.encode()).hexdigest()[:16]
    return f"addr-{request.remote_addr}"


def settings() -> GatewaySettings:
    return current_app.extensions["settings"]


def json_body(empty: Any = None) -> Any:
    """The request's JSON (``empty`` when there is no body, None when it is not JSON),
    refused with 413 past MAX_JSON_BYTES before any of it is parsed: parsing costs many
    times the body's size (a 24 MB list of ids took 345 MB)."""
    limit = settings().max_json_bytes
    too_large = ApiError(
        413, "json_too_large", f"the JSON body is larger than the limit of {limit:,} bytes"
    )
    if (request.content_length or 0) > limit:
        raise too_large
    data = request.stream.read(limit + 1)  # the length may be missing or wrong
    if len(data) > limit:
        raise too_large
    if not data:
        return empty
    if not request.is_json:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser's stack
        return None


def given_key() -> str:
    """The key a request carries: X-API-Key, or a bearer token (what Prometheus sends)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("X-API-Key", "")


def key_is_valid(given: str) -> bool:
    expected = settings().api_key
    if expected is None:
        return True
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def _check_key() -> None:
    if not key_is_valid(given_key()):
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
