"""Errors a client can act on, and the handlers that answer every failure as JSON."""

import logging
from typing import TypeVar

import kombu.exceptions
from flask import Flask, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.contracts import first_problem
from shared.data_plane import UNAVAILABLE
from shared.images import ImageRejected

from .decoding import DecodersBusy

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An error a client can act on: status code, short code, and a sentence for a person."""

    def __init__(self, status: int, code: str, message: str, **details) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers: dict[str, str] = {}  # e.g. Retry-After


class FormLimitExceeded(RequestEntityTooLarge):
    """A multipart form over one of werkzeug's form limits, saying which one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error_code, self.message = code, message


def error_response(status: int, code: str, message: str, **details):
    response = jsonify({"error": {"code": code, "message": message, **details}})
    response.status_code = status
    return response


def validated(model: type[M], data: object, **limits: object) -> M:
    """``data`` read as a request model of shared/contracts.py, or the ApiError it earns.

    ``limits`` (MAX_K, ...) reach the model's validators as validation context.
    """
    try:
        return model.model_validate(data, context=limits)
    except ValidationError as err:
        status, code, message = first_problem(err)
        raise ApiError(status, code, message) from err


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        response = error_response(err.status, err.code, err.message, **err.details)
        response.headers.update(err.headers)
        return response

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

    def _redis_down(err: Exception):
        log.error("redis unavailable", extra={"error": str(err), "path": request.path})
        return error_response(
            503, "storage_unavailable", "the service's storage (Redis) is not reachable; try again"
        )

    for unavailable in UNAVAILABLE:  # one Redis's errors, and a cluster client's own
        app.register_error_handler(unavailable, _redis_down)

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
