"""Progress from a model thread to the event loop, latest first (the one coalescing point on every path).

A producer (a denoising callback on a worker thread) puts (step, total, preview?) as often as it likes. While
one delivery is on its way, newer updates replace the pending one, and a preview waits for the next delivery
instead of being dropped, so nothing decoded is thrown away and the loop is never flooded. A step reaches the
loop at most every `min_interval_s` (the first and the last step at once): each delivery wakes the loop, and
on a CPU that wake takes time from the denoiser's own threads. Consumers (the job store, the Discord editor)
decide how often they act on what arrives.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

Deliver = Callable[[int, int, Any], None]
MIN_INTERVAL_S = 0.1  # ten updates a second: more than any front shows (a Discord edit waits ~1 s)


class LatestProgress:
    """A one-slot mailbox: put() from any thread, deliver(step, total, preview) runs on the loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Deliver, min_interval_s: float = MIN_INTERVAL_S
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._latest: tuple[int, int] | None = None
        self._preview: Any = None
        self._scheduled = False
        self._sent = float("-inf")  # when the last delivery was scheduled (time.monotonic)

    def put(self, step: int, total: int, preview: Any = None) -> None:
        """Record the newest step (and preview, if any); schedule one delivery unless one is pending or the last
        was scheduled under min_interval_s ago (a later step, at the latest the last one, then brings this)."""
        now = time.monotonic()
        with self._lock:
            self._latest = (step, total)
            if preview is not None:
                self._preview = preview
            if self._scheduled or (step < total and now - self._sent < self._min_interval_s):
                return
            self._scheduled, self._sent = True, now
        if not self._loop.is_closed():  # a thread outliving a stopped loop has nobody to tell
            self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            latest, preview = self._latest, self._preview
            self._latest, self._preview, self._scheduled = None, None, False
        if latest is not None:
            self._deliver(latest[0], latest[1], preview)
