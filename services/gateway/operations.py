"""Health and statistics: what a load balancer, an orchestrator and a person ask."""

import time
from typing import Any

from shared import keys, names
from shared.fusion import stored_fit, weights_in_use

from .auth import given_key, key_is_valid
from .context import broker_redis, catalogue, index_store, redis_client, settings


def health() -> tuple[dict[str, Any], int]:
    """Redis reachable; live workers and waiting tasks per queue; the HTTP status."""
    client = redis_client()
    try:
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure here means "not healthy"
        return {"status": "unavailable", "redis": f"unreachable: {err}"}, 503
    now = time.time()
    queues = names.all_queues(settings().index_shards)
    heartbeats = client.pipeline(transaction=False)
    waiting = broker_redis().pipeline(transaction=False)  # the broker's list per queue
    for queue in queues:
        heartbeats.zrangebyscore(keys.workers(queue), now - keys.WORKER_STALE_SECONDS, "+inf")
        waiting.llen(queue)
    workers = {
        queue: {"workers": sorted(w.decode() for w in live), "waiting": count}
        for queue, live, count in zip(queues, heartbeats.execute(), waiting.execute(), strict=True)
    }
    missing = [queue for queue, entry in workers.items() if not entry["workers"]]
    status = "degraded" if missing else "ok"
    if settings().reads_require_key and not key_is_valid(given_key()):
        # Orchestrators and load balancers get the verdict; host names and process ids in
        # the worker names are for clients with the key.
        return {"status": status}, 200
    body: dict[str, Any] = {"status": status, "redis": "ok"}
    if missing:
        body["missing"] = missing
        body["message"] = "no live worker consumes " + ", ".join(missing)
    body["queues"] = workers
    return body, 200


def stats() -> dict[str, Any]:
    """Catalogue size; index size, model version and versions being built per method; the
    fusion weights in use; the k a search may ask for (the page's "Show more")."""
    store = index_store()
    methods = {}
    for method in names.METHODS:
        active, building, _ = store.versions(method)
        methods[method] = {
            "model_version": active,
            "index_size": store.size(method, active) if active else 0,
            "building": {version: store.size(method, version) for version in building},
        }
    cfg = settings()
    fusion = weights_in_use(stored_fit(redis_client()), cfg.fusion_weights)
    return {
        "catalogue_size": catalogue().size(),
        "methods": methods,
        "fusion": fusion.to_json(),
        "search_limits": {"default_k": cfg.default_k, "max_k": cfg.max_k},
    }
