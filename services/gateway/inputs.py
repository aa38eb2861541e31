"""Reading requests: multipart forms whose 413s name the limit hit, and bounded JSON bodies."""

import json
from typing import Any

from flask import Request, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from .context import settings
from .errors import ApiError, FormLimitExceeded

# A text field of a multipart form (an id, 'metadata', k) is kept in memory whole; 'metadata'
# may be 16 KiB. Werkzeug reads 64 KiB at a time and checks its buffer against the same
# limit, so the limit must sit well above that.
MAX_FORM_FIELD_BYTES = 256 * 1024


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


def uploaded_files() -> list[FileStorage]:
    """The form's files named 'file' (checked by the request models)."""
    return request.files.getlist("file")


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
