"""Prometheus metrics of the gateway at ``/metrics``: HTTP traffic, queues, catalogue, indexes.

Requests are counted and timed by the route's URL rule (``/api/v1/images/<image_id>``), never
the raw path, so ids do not create time series. Queue depths, the catalogue size and each
method's index size and model version are read from Redis when Prometheus scrapes, so they are
right whichever process changed them; a scrape still answers (``imgsearch_redis_up 0``) when
Redis is down.

The gateway runs as one process (waitress, ``GATEWAY_THREADS`` threads), which holds the
counters. Behind a load balancer with several gateway replicas, scrape each one.
"""

import re
import time
from collections.abc import Iterator

import redis
from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared import keys, names
from shared.catalogue import Catalogue
from shared.index_store import IndexStore

from .auth import read_access

# Up to a minute: GET /jobs/{id}?wait= holds a request open for up to MAX_WAIT_SECONDS.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"  # 404s for paths no route matches: one series for all of them
# Converters are not part of a route's name: <any('loss-curve', 'preview'):artifact> is <artifact>
CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^:<>]+)>")

# The *_created series (when each counter was first used) double the output and no dashboard
# reads them; Prometheus knows when it first saw a series.
disable_created_metrics()


def route_label(rule: str) -> str:
    """The route label of a URL rule: its variables named, without their converters."""
    return CONVERTER.sub(r"<\1>", rule)


# What /metrics exposes besides the process_* and python_* metrics of prometheus_client.
METRIC_NAMES = (
    "imgsearch_http_requests_total",
    "imgsearch_http_request_duration_seconds",
    "imgsearch_redis_up",
    "imgsearch_queue_depth",
    "imgsearch_queue_workers",
    "imgsearch_catalogue_images",
    "imgsearch_index_size",
    "imgsearch_index_building_size",
    "imgsearch_model_info",
)


class RedisStateCollector(Collector):
    """Gauges read from Redis at scrape time."""

    def __init__(self, client: redis.Redis, catalogue: Catalogue, index_shards: int = 1) -> None:
        self.client = client
        self.catalogue = catalogue
        self.index_shards = index_shards
        self.store = IndexStore(client, index_shards)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("imgsearch_redis_up", "1 when this scrape could read Redis")
        try:
            families = self._read()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[GaugeMetricFamily]:
        queues = names.all_queues(self.index_shards)
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
            pipe.zcount(keys.workers(queue), now - keys.WORKER_STALE_SECONDS, "+inf")
        replies = pipe.execute()
        depth = GaugeMetricFamily(
            "imgsearch_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "imgsearch_queue_workers",
            "Live, ready workers consuming each queue (from their heartbeats)",
            labels=["queue"],
        )
        for n, queue in enumerate(queues):
            depth.add_metric([queue], replies[2 * n])
            workers.add_metric([queue], replies[2 * n + 1])

        catalogue = GaugeMetricFamily("imgsearch_catalogue_images", "Images in the catalogue")
        catalogue.add_metric([], self.catalogue.size())
        index = GaugeMetricFamily(
            "imgsearch_index_size",
            "Vectors in the index of each method's active model version (0 without a model)",
            labels=["method"],
        )
        building = GaugeMetricFamily(
            "imgsearch_index_building_size",
            "Vectors in the index of a model version being built (a training's new version)",
            labels=["method", "version"],
        )
        model = GaugeMetricFamily(
            "imgsearch_model_info",
            "The model version answering each method's searches (absent without a model)",
            labels=["method", "version"],
        )
        for method in names.METHODS:
            versions = self.store.versions(method)
            if versions.active:
                index.add_metric([method], self.store.size(method, versions.active))
                model.add_metric([method, versions.active], 1)
            else:
                index.add_metric([method], 0)
            for version in versions.building:
                building.add_metric([method, version], self.store.size(method, version))
        return [depth, workers, catalogue, index, building, model]


def init_metrics(app: Flask) -> CollectorRegistry:
    """Count and time every request of ``app`` and serve the metrics at ``/metrics``."""
    # A registry per app (not prometheus_client's global one), so tests can build many apps.
    registry = CollectorRegistry()
    requests_total = Counter(
        "imgsearch_http_requests",
        "HTTP requests answered, by route (URL rule), method and status",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "imgsearch_http_request_duration_seconds",
        "Time to answer HTTP requests, by route (URL rule), method and status",
        ["route", "method", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(
        RedisStateCollector(
            app.extensions["redis"],
            app.extensions["catalogue"],
            app.extensions["settings"].index_shards,
        )
    )

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    # Also runs for responses made by error handlers, including unhandled exceptions' 500s.
    @app.after_request
    def _count(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            route = route_label(request.url_rule.rule) if request.url_rule else UNMATCHED_ROUTE
            method = request.method if request.method in HTTP_METHODS else "other"
            labels = (route, method, str(response.status_code))
            requests_total.labels(*labels).inc()
            latency.labels(*labels).observe(time.perf_counter() - started)
        return response

    @read_access  # host names and queue sizes are not for everyone when reads need the key
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    app.extensions["metrics_registry"] = registry
    return registry
