"""The Flask application factory: settings, Redis, Celery, blueprints, error handlers.

Run:  python -m services.gateway  (the waitress server, services/gateway/__main__.py)
"""

from flask import Flask

from shared.blobs import open_blob_store
from shared.catalogue import Catalogue
from shared.celery_app import make_celery
from shared.logs import configure_logging
from shared.settings import broker_client, redis_client

from .apidoc import docs
from .auth import register_rate_limit
from .decoding import DecodeSlots, unmap_large_allocations
from .errors import register_error_handlers
from .inputs import MAX_FORM_FIELD_BYTES, GatewayRequest
from .metrics import init_metrics
from .routes import api
from .settings import GatewaySettings
from .url_fetch import FetchLimits, UrlFetcher
from .waiting import WaitSlots
from .web import web


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
    # The Celery broker's Redis: the data plane's own, unless that is a cluster.
    app.extensions["broker_redis"] = (
        broker_client(settings) if settings.redis_cluster_nodes else client
    )
    app.extensions["catalogue"] = Catalogue(client, open_blob_store(settings))
    app.extensions["celery"] = make_celery(settings, "gateway")
    app.extensions["wait_slots"] = WaitSlots(settings.max_waiting_requests)
    app.extensions["decode_slots"] = DecodeSlots(
        settings.max_concurrent_decodes, settings.decode_wait_seconds
    )
    app.extensions["url_fetcher"] = UrlFetcher(
        FetchLimits(
            max_bytes=settings.url_fetch_max_bytes,
            timeout_seconds=settings.url_fetch_timeout_seconds,
            max_redirects=settings.url_fetch_max_redirects,
            allowed_networks=tuple(settings.url_fetch_allowed_networks),
        ),
        settings.url_fetch_max_concurrent,
    )
    unmap_large_allocations()  # a decode's memory goes back to the system when it ends

    app.register_blueprint(api, url_prefix="/api/v1")
    app.register_blueprint(docs)  # /api/v1/openapi.json, /api/v1/docs
    app.register_blueprint(web)  # the web page at /
    init_metrics(app)  # /metrics
    register_error_handlers(app)
    register_rate_limit(app)
    return app
