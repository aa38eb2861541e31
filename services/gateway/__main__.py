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

import logging

from waitress import serve

from .app import create_app
from .settings import GatewaySettings

log = logging.getLogger(__name__)


def _proxy_options(trusted_proxy: str | None) -> dict:
    """Believe X-Forwarded-For/-Proto only from the proxy named by GATEWAY_TRUSTED_PROXY."""
    if not trusted_proxy:
        return {"clear_untrusted_proxy_headers": True}
    return {
        "trusted_proxy": trusted_proxy,
        "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
        "clear_untrusted_proxy_headers": True,
    }


def main() -> None:
    settings = GatewaySettings()
    app = create_app(settings)
    log.info(
        "gateway listening",
        extra={
            "host": settings.gateway_host,
            "port": settings.gateway_port,
            "threads": settings.gateway_threads,
            "connection_limit": settings.gateway_connection_limit,
        },
    )
    serve(
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
        # Flask refuses bodies over MAX_UPLOAD_BYTES with a JSON 413; the server refuses
        # anything far past it before buffering it at all.
        max_request_body_size=2 * settings.max_upload_bytes,
        max_request_header_size=64 * 1024,
        ident="image-search",
        **_proxy_options(settings.gateway_trusted_proxy),
    )


if __name__ == "__main__":
    main()
