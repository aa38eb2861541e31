"""The Celery configuration the gateway and both workers share."""

from celery import Celery
from kombu import Queue

from shared import names
from shared.settings import CommonSettings


def task_routes() -> dict[str, dict[str, str]]:
    routes: dict[str, dict[str, str]] = {}
    for method in names.METHODS:
        routes[names.SEARCH_TASKS[method]] = {"queue": names.queue_name(method, names.SEARCH)}
        routes[names.EMBED_BATCH_TASKS[method]] = {"queue": names.queue_name(method, names.INDEX)}
    routes[names.AUTOENCODER_TRAIN] = {"queue": names.queue_name("autoencoder", names.TRAIN)}
    routes[names.AUTOENCODER_FIT_FUSION] = {"queue": names.queue_name("autoencoder", names.INDEX)}
    return routes


def make_celery(settings: CommonSettings, main: str) -> Celery:
    app = Celery(main, broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        # JSON only: a broker message can never make a worker unpickle code.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Every queue is declared; a typo in a route fails instead of creating a dead queue.
        # Shard search tasks name their queue when sent (it depends on the shard): no route.
        task_queues=[Queue(q) for q in names.all_queues(settings.index_shards)],
        task_create_missing_queues=False,
        task_routes=task_routes(),
        # "running" is a status clients see, so workers report when they start a task.
        task_track_started=True,
        result_expires=settings.job_ttl_seconds,
        result_extended=False,
        # Tasks are idempotent (vectors keyed by image id and model version), so a task
        # whose worker died is delivered again rather than lost; one task at a time each.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Counted from a worker's last heartbeat, which renews the tasks it runs (see
            # Heartbeat in shared/runtime/worker.py), not from when the task was taken.
            "visibility_timeout": settings.task_visibility_timeout_seconds,
            # kombu looks for unacknowledged tasks past that timeout only every interval x
            # throttle seconds (10 x 10 by default), so a task whose worker died came back up
            # to 100 s late; look every 10 s (one small sorted-set query) instead. Any worker
            # not busy with a task looks (the solo pool's event loop waits while one runs).
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
        },
        redis_socket_timeout=settings.redis_timeout_seconds,
        redis_socket_connect_timeout=settings.redis_timeout_seconds,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # Flower
        task_send_sent_event=True,
        enable_utc=True,
    )
    return app
