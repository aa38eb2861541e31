"""Serve the gateway: ``python -m services.gateway`` (make run, the tests and the container).

The server is waitress. Its I/O thread reads every request whole (headers, then the body,
spooled to a temporary file past ``inbuf_overflow``) before a worker thread sees it, and
writes responses from a buffer, so a client that sends slowly, never finishes its headers or
reads slowly holds a socket and a few kilobytes, never a thread. A connection silent for
``GATEWAY_IDLE_TIMEOUT_SECONDS`` is closed. gunicorn's threaded worker, used before, hands a
connection to a thread as soon as its first bytes arrive: sixteen clients that never
finished their headers stopped it (README, "Front door").

Long polls (``GET /jobs/{id}?wait=``) do hold a thread while they wait; the gateway caps how
many do at once (``MAX_WAITING_REQUESTS``), below the thread count, so the rest always find
a free thread (services/gateway/waiting.py).
"""

import json
import logging

import redis
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from .app import create_app
from .settings import GatewaySettings

log = logging.getLogger(__name__)


class JsonErrorTask(ErrorTask):
    """The server's own refusals (body or headers too large, malformed requests) in the API's
    error format, ``{"error": {"code", "message"}}``, like every other error."""

    def execute(self) -> None:
        error = self.request.error
        code = error.reason.lower().replace(" ", "_")
        if error.code == 413:
            message = f"the upload is larger than the limit of {self.max_body:,} bytes"
        elif error.code == 431:
            message = "the request's headers are larger than the server accepts (64 KiB)"
        else:
            message = f"the server could not read this request: {error.body}"
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)

    @property
    def max_body(self) -> int:
        return self.channel.server.adj.max_request_body_size


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def _proxy_options(trusted_proxy: str | None) -> dict:
    """Believe X-Forwarded-For/-Proto only from the proxy named by GATEWAY_TRUSTED_PROXY."""
    if not trusted_proxy:
        return {"clear_untrusted_proxy_headers": True}
    return {
        "trusted_proxy": trusted_proxy,
        "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
        "clear_untrusted_proxy_headers": True,
    }


def migrate_legacy_images(app) -> None:
    """Move JPEGs that a release before the blob store kept in Redis into it (idempotent;
    cheap when there are none: one SCAN of the key space)."""
    try:
        moved = app.extensions["catalogue"].migrate_legacy()
    except redis.RedisError as err:  # Redis not up yet: the next start migrates
        log.warning("legacy images not migrated", extra={"error": str(err)})
        return
    if moved:
        log.info("legacy images moved to the blob store", extra={"images": moved})


def main() -> None:
    settings = GatewaySettings()
    app = create_app(settings)
    migrate_legacy_images(app)
    log.info(
        "gateway listening",
        extra={
            "host": settings.gateway_host,
            "port": settings.gateway_port,
            "threads": settings.gateway_threads,
            "connection_limit": settings.gateway_connection_limit,
        },
    )
    server = create_server(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        threads=settings.gateway_threads,
        connection_limit=settings.gateway_connection_limit,
        # A connection that sends or reads nothing for this long is closed; the sweep runs
        # every few seconds so the bound holds within a few seconds of it.
        channel_timeout=settings.gateway_idle_timeout_seconds,
        cleanup_interval=2,
        # poll(), not select(): select() cannot watch descriptors numbered above 1023.
        asyncore_use_poll=True,
        # A body declared or sent past MAX_UPLOAD_BYTES is refused by the server before it
        # is buffered (413, JsonErrorTask); Flask checks the same limit again.
        max_request_body_size=settings.max_upload_bytes,
        max_request_header_size=64 * 1024,
        ident="image-search",
        **_proxy_options(settings.gateway_trusted_proxy),
    )
    server.channel_class = JsonErrorChannel
    server.run()


if __name__ == "__main__":
    main()
