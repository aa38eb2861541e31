"""Decoding uploads in bounded memory: at most ``MAX_CONCURRENT_DECODES`` at once.

Decoding costs up to 4 bytes per pixel the upload declares (200 MB at the default
``MAX_IMAGE_PIXELS``) for the second or so it takes; everything else an upload costs is
small (shared/images.py). So memory is bounded by the number of decodes that run at once,
not by the number of requests: past the cap a request waits up to ``DECODE_WAIT_SECONDS``
for a slot, then gets 503 with ``Retry-After``. More decodes at once would not finish sooner
either: decoding is CPU work, one core each.

glibc keeps freed memory for reuse, and each server thread allocates from an arena of its
own: eight large decodes on eight threads left eight arenas at their peak size, 2.4 GB for
uploads that needed 400 MB at a time, kept for good (README, "Measured here"). So
allocations of a megabyte or more (image buffers: Pillow allocates them in blocks of up to
16 MB) are made with mmap and unmapped when freed (``M_MMAP_THRESHOLD``, fixed instead of
glibc's default that rises to 32 MB as large blocks are freed), and the last decode to
finish calls ``malloc_trim(0)`` for the smaller pieces. Other C libraries (musl, macOS)
lack both calls; there this is skipped.
"""

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# mallopt's parameter number for the mmap threshold (glibc malloc.h) and the value used.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024


class DecodersBusy(Exception):
    """Every decode slot stayed taken for the whole wait."""

    def __init__(self, waited: float, retry_after: int) -> None:
        super().__init__(f"no decode slot within {waited:g} s")
        self.waited, self.retry_after = waited, retry_after


def _libc_function(name: str):
    """A glibc allocator function, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def unmap_large_allocations() -> bool:
    """Have glibc mmap every allocation of MMAP_THRESHOLD_BYTES or more, so that freeing it
    returns it to the system at once; whether the C library took the setting."""
    mallopt = _libc_function("mallopt")
    taken = mallopt is not None and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    log.info("large allocations unmapped when freed", extra={"enabled": taken})
    return taken


class DecodeSlots:
    """At most ``limit`` decodes at once; a caller waits up to ``wait_seconds`` for a slot."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit, self.wait_seconds = limit, wait_seconds
        self._free = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._running = 0
        self._trim = _libc_function("malloc_trim")

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a decode slot for the block; raise DecodersBusy if none frees up in time."""
        if not self._free.acquire(timeout=self.wait_seconds):
            raise DecodersBusy(self.wait_seconds, retry_after=max(1, round(self.wait_seconds)))
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            self._free.release()
            if last and self._trim is not None:
                self._trim(0)
