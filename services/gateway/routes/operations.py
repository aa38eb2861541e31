"""/health and /stats."""

from flask import jsonify

from shared.contracts import Health, HealthOrError, Stats

from .. import operations
from ..apidoc import documented
from ..auth import read_access
from . import api


@api.get("/health")
@documented(
    "health",
    "operations",
    ok=(200, Health, "Redis answers."),
    more={503: (HealthOrError, "Redis is not reachable.")},
    rate_limited=False,
)
def health():
    """Redis reachable; live workers and waiting tasks per queue

    `degraded` when a queue has no live worker (named in `missing`). Always open; when reads
    need the key, a request without it gets only `status`.
    """
    body, status = operations.health()
    return jsonify(body), status


@api.get("/stats")
@documented("stats", "operations", ok=(200, Stats, "Statistics."), errors=(401, 503))
@read_access
def stats():
    """Catalogue size; index size and model version per method"""
    return jsonify(operations.stats())
