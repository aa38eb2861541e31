"""Searches waiting in a worker's queue embedded in one forward pass, answered one by one.

A worker runs the solo pool: Celery executes a task inside the callback that received its
message, so nothing ever waits "reserved but not started" for a batch to form. This module
gives the search task a Celery *strategy* (what the consumer does with each message received)
that is Celery's default one with a single change: instead of executing the request at once,
it is held in a buffer, and the consumer may fetch the next message meanwhile (the prefetch
count is raised by one per held request, as Celery does for ETA tasks). The buffer is
flushed when it holds SEARCH_BATCH_SIZE requests, or once SEARCH_BATCH_WAIT_MS passed since
its first one arrived, the queue holds no more searches (MAX_GATHER_SECONDS at most) and
as many are held as the last batch ran (a fraction of its time at most, see _waited):

1. requests expired (``expires``: the job's deadline) or revoked meanwhile are marked
   REVOKED and acknowledged by Celery's own ``Request.revoked()``, and are not embedded;
2. the others are marked STARTED (clients see "running" during the shared pass), their
   query images are read in one round trip and embedded together (``prepare``);
3. each request is then executed exactly as without batching (Celery's request and tracer:
   its own result, STARTED/SUCCESS/FAILURE, acks_late ack, autoretry on Redis errors,
   events, time limits); the task finds its query's vector ready and skips the embedding.

Anything that goes wrong in step 2 only means a query is not prepared: its task then reads
and embeds its image alone, as without batching, and fails or retries exactly as before.

Held requests stay registered in ``celery.worker.state.requests`` (Celery's
``task_reserved`` is called on receipt, as always), so whatever reads that registry (the
heartbeat that renews the broker's clock of unacknowledged messages) sees them too.

Chosen over celery-batches (0.11): it requires celery < 5.7, and its batch task gets
``SimpleRequest`` copies that bypass Celery's tracer, so STARTED states, per-request
retries, ``expires`` and the worker's request registry would all have to be rebuilt here.
"""

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from celery import states
from celery.worker.strategy import default as default_strategy

log = logging.getLogger(__name__)

# However many searches are still queued, a batch is run this long after its first one
# arrived: well under one embedding (README.md, "Searches under load"), and long enough to
# receive a batch's worth of queued messages on a busy machine (a few milliseconds each).
MAX_GATHER_SECONDS = 0.1

# While fewer searches are held than the last batch ran, wait for that batch's clients to
# come back for at most this fraction of its time, and never more than MAX_COMPANY_SECONDS.
COMPANY_WAIT_FRACTION = 0.5
MAX_COMPANY_SECONDS = 0.3

# What ``prepare`` returns: task id -> what that task needs to skip its own embedding.
Prepared = dict[str, Any]


class _Consumer:
    """The worker's consumer, with another handler for the requests it receives."""

    def __init__(self, consumer: Any, on_task_request: Callable[[Any], None]) -> None:
        self._consumer = consumer
        self.on_task_request = on_task_request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class QueryBatcher:
    """Holds the search requests a worker receives and runs them in batches."""

    def __init__(
        self,
        size: int,
        wait_seconds: float,
        prepare: Callable[[list[Any]], Prepared],
        queued: Callable[[], int] = lambda: 0,
    ) -> None:
        self.size = size
        self.wait_seconds = wait_seconds
        self.prepare = prepare
        self.queued = queued
        self.prepared: Prepared = {}
        self._held: list[Any] = []
        self._held_since = 0.0
        self._last_size = 0  # requests run by the last flush
        self._last_seconds = 0.0  # and how long it took
        self._timer_entry = None
        self._consumer: Any = None
        self._execute: Callable[[Any], None] | None = None

    def strategy(self) -> Callable[..., Any]:
        """The value for the task's ``Strategy`` option (a factory Celery calls)."""
        return functools.partial(_batching_strategy, self)

    def flushing_strategy(self) -> Callable[..., Any]:
        """A ``Strategy`` for the worker's other tasks: run the held searches first."""
        return functools.partial(_flushing_strategy, self)

    def take(self, task_id: str) -> Any | None:
        """What ``prepare`` made for this task, if its request was in a batch."""
        return self.prepared.pop(task_id, None)

    # Called in the consumer's thread (the event loop) only.
    def hold(self, request: Any) -> None:
        self._held.append(request)
        # The held message is unacknowledged (acks_late): without one more slot the broker
        # would not deliver the next one until this batch ran.
        self._consumer.qos.increment_eventually()
        if len(self._held) >= self.size:
            self.flush()
        elif self._timer_entry is None:
            self._held_since = time.monotonic()
            self._timer_entry = self._consumer.timer.call_after(self.wait_seconds, self._waited)

    def _waited(self) -> None:
        self._timer_entry = None
        waited = time.monotonic() - self._held_since
        if self._held and (
            # Searches already in the queue join however long receiving them takes (a few ms
            # each, more on a busy machine).
            (waited < MAX_GATHER_SECONDS and self._queued())
            # The clients the last batch answered tend to come back with their next query a
            # moment later (their poll sees the result, they send the next): while fewer are
            # held than that batch had, wait for them, for a fraction of its time at most.
            # Otherwise the clients split into groups whose batches take turns, each paying
            # a forward pass's fixed cost. A lone client (last batch of 1) never waits more.
            or (
                len(self._held) < self._last_size
                and waited < min(COMPANY_WAIT_FRACTION * self._last_seconds, MAX_COMPANY_SECONDS)
            )
        ):
            self._timer_entry = self._consumer.timer.call_after(self.wait_seconds, self._waited)
            return
        self.flush()

    def _queued(self) -> int:
        try:
            return self.queued()
        except Exception:  # noqa: BLE001 - e.g. Redis gone: run what is held
            return 0

    def flush(self) -> None:
        """Embed the held requests' queries together, then execute each request."""
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        held, self._held = self._held, []
        if not held:
            return
        flushed = time.monotonic()
        self._consumer.qos.decrement_eventually(len(held))
        # revoked() marks an expired or revoked request REVOKED, acknowledges it and drops
        # it from the worker's registry, as Celery does before executing any request.
        live = [request for request in held if not request.revoked()]
        if len(live) > 1:
            self._mark_started(live)
            started = time.perf_counter()
            try:
                self.prepared = self.prepare(live)
            except Exception:  # noqa: BLE001 - each request then embeds alone, as unbatched
                log.warning("query batch not prepared", exc_info=True)
                self.prepared = {}
            log.info(
                "query batch",
                extra={
                    "requests": len(held),
                    "embedded": len(self.prepared),
                    "held_ms": round(1000 * (flushed - self._held_since), 1),
                    "seconds": round(time.perf_counter() - started, 4),
                },
            )
        try:
            for request in live:
                self._execute(request)
        finally:
            self.prepared = {}
            self._last_size = len(live)
            self._last_seconds = time.monotonic() - flushed

    def _mark_started(self, requests: list[Any]) -> None:
        # What the tracer writes when a request starts (task_track_started); it writes it
        # again when it runs the request, after the shared embedding.
        for request in requests:
            if not request.task.track_started:
                continue
            try:
                request.task.backend.store_result(
                    request.id,
                    {"pid": os.getpid(), "hostname": request.hostname},
                    states.STARTED,
                    request=request._context,  # noqa: SLF001 - what the tracer passes
                )
            except Exception:  # noqa: BLE001 - only the early "running"; the tracer retries it
                log.warning("could not mark a batched search started", exc_info=True)


def _batching_strategy(batcher: QueryBatcher, task: Any, app: Any, consumer: Any, **kwargs):
    """Celery's default strategy, handing requests to the batcher instead of executing them."""
    batcher._consumer = consumer  # noqa: SLF001
    batcher._execute = consumer.on_task_request  # noqa: SLF001
    # A new connection builds new strategies; requests held for the old one come back from
    # the broker (never acknowledged), so they are dropped, not executed.
    batcher._held = []  # noqa: SLF001
    batcher._timer_entry = None  # noqa: SLF001
    return default_strategy(task, app, _Consumer(consumer, batcher.hold), **kwargs)


def _flushing_strategy(batcher: QueryBatcher, task: Any, app: Any, consumer: Any, **kwargs):
    """Celery's default strategy, flushing the held searches before executing a request."""
    execute = consumer.on_task_request

    def flush_then_execute(request: Any) -> None:
        batcher.flush()
        execute(request)

    return default_strategy(task, app, _Consumer(consumer, flush_then_execute), **kwargs)
