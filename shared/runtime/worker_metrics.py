"""Prometheus metrics of a worker process: how long embedding and searching take.

Off unless ``WORKER_METRICS_PORT`` is set: then each worker process serves its metrics at
``http://<host>:<port>/metrics`` (one port per process: with several worker processes on one
host, give each its own port). The gateway's /metrics covers queues, catalogue and indexes;
these histograms add what only a worker measures.

Workers use the solo pool (one process, tasks in its main thread), so prometheus_client's
default registry and an HTTP server thread in that process see every observation.
"""

import logging

from prometheus_client import Counter, Histogram, disable_created_metrics, start_http_server

log = logging.getLogger(__name__)

# No *_created series: they double the output and Prometheus knows when it first saw a series.
disable_created_metrics()

# A query embedding takes tens of milliseconds; an indexing batch of 32 images seconds.
EMBED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SEARCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

QUERY_EMBED_SECONDS = Histogram(
    "imgsearch_worker_query_embed_seconds",
    "Time to embed one search's query image",
    ["method"],
    buckets=EMBED_BUCKETS,
)
INDEX_SEARCH_SECONDS = Histogram(
    "imgsearch_worker_index_search_seconds",
    "Time to search the index with an embedded query (including catching up on its log)",
    ["method"],
    buckets=SEARCH_BUCKETS,
)
BATCH_EMBED_SECONDS = Histogram(
    "imgsearch_worker_batch_embed_seconds",
    "Time to embed one batch of catalogue images for indexing",
    ["method"],
    buckets=EMBED_BUCKETS,
)
EMBEDDED_IMAGES = Counter(
    "imgsearch_worker_embedded_images",
    "Catalogue images embedded for indexing",
    ["method"],
)

_started: dict[int, int] = {}


def start_metrics_server(port: int | None, addr: str = "0.0.0.0") -> int | None:  # noqa: S104
    """Serve this process's metrics on ``port``; no-op when ``port`` is None (the default).

    Returns the bound port. Safe to call twice (the second call does nothing). A port already
    taken is logged, not raised: metrics must never stop a worker from working.
    """
    if port is None:
        return None
    if port in _started:
        return _started[port]
    try:
        server, _thread = start_http_server(port, addr=addr)
    except OSError as err:
        log.warning("worker metrics not served", extra={"port": port, "error": str(err)})
        return None
    bound = server.server_address[1]
    _started[port] = bound
    log.info("worker metrics served", extra={"port": bound})
    return bound


def observe_search(method: str, embed_seconds: float, search_seconds: float) -> None:
    """Record one search's timings (the two parts MethodService.search already measures)."""
    QUERY_EMBED_SECONDS.labels(method).observe(embed_seconds)
    INDEX_SEARCH_SECONDS.labels(method).observe(search_seconds)


def observe_shard_search(method: str, search_seconds: float) -> None:
    """Record the search of one index shard with a vector embedded by another worker (no
    embedding: the query embed count stays one per search, whatever the shards)."""
    INDEX_SEARCH_SECONDS.labels(method).observe(search_seconds)


def observe_batch(method: str, images: int, seconds: float) -> None:
    """Record the embedding of one batch of catalogue images."""
    BATCH_EMBED_SECONDS.labels(method).observe(seconds)
    EMBEDDED_IMAGES.labels(method).inc(images)
