"""Long polls that cannot take every thread: ``GET /jobs/{id}?wait=`` holds a slot to wait.

A waiting request holds a server thread (WSGI has no other way to answer later), so the
number that wait at once is capped below the thread count (``MAX_WAITING_REQUESTS``): past
it, a poll answers at once with the job as it stands and ``Retry-After: 1``, and searches,
uploads and ``/health`` always find a free thread.

While it waits, a request rereads only the raw result records of the job's tasks (one MGET)
and rebuilds the job's view when one of them changed, or every ``REFRESH_SECONDS`` for what
is not in them (a training's lease, a job's deadline).
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

REFRESH_SECONDS = 2.0
FIRST_CHECK_SECONDS = 0.02
LONGEST_CHECK_SECONDS = 0.25


class WaitSlots:
    """At most ``limit`` holders at once; taking a slot never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit) if limit > 0 else None

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Yields whether a slot was free (and holds it until the block ends)."""
        taken = self._free is not None and self._free.acquire(blocking=False)
        try:
            yield taken
        finally:
            if taken:
                self._free.release()


def wait_for_change(
    view: Callable[[], dict[str, Any]],
    fingerprint: Callable[[], Any],
    is_final: Callable[[dict[str, Any]], bool],
    seconds: float,
) -> dict[str, Any]:
    """The job's view once it is final, or as it stands after ``seconds``."""
    deadline = time.monotonic() + seconds
    # The records before the view: a change between the two is seen at the next check.
    seen = fingerprint()
    current = view()
    refreshed = time.monotonic()
    interval = FIRST_CHECK_SECONDS
    while not is_final(current):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, LONGEST_CHECK_SECONDS)
        latest = fingerprint()
        if latest != seen or time.monotonic() - refreshed >= REFRESH_SECONDS:
            seen, refreshed = latest, time.monotonic()
            current = view()
    return current
