"""Access: writes need the API key, reads only with READS_REQUIRE_KEY; per-client rate limit."""

import hashlib
import hmac
import math
import time
from functools import wraps

from flask import Flask, request

from shared import keys

from .context import redis_client, settings
from .errors import ApiError, error_response


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

    wrapper.access = "write"  # read by the OpenAPI document: padlock
    return wrapper


def read_access(view):
    """Reads: open, unless READS_REQUIRE_KEY closes them."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if settings().reads_require_key:
            _check_key()
        return view(*args, **kwargs)

    wrapper.access = "read"  # read by the OpenAPI document: key optional
    return wrapper


def register_rate_limit(app: Flask) -> None:
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
        pipe = redis_client().pipeline(transaction=False)
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
