"""Progress from a model thread to the event loop, latest first (the one coalescing point on every path).

A producer (a denoising callback on a worker thread) puts (step, total, preview?) as often as it likes. While
one delivery is on its way, newer updates replace the pending one, and a preview waits for the next delivery
instead of being dropped, so nothing decoded is thrown away and the loop is never flooded. Consumers (the job
store, the Discord editor) decide how often they act on what arrives.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

Deliver = Callable[[int, int, Any], None]


class LatestProgress:
    """A one-slot mailbox: put() from any thread, deliver(step, total, preview) runs on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        self._loop = loop
        self._deliver = deliver
        self._lock = threading.Lock()
        self._latest: tuple[int, int] | None = None
        self._preview: Any = None
        self._scheduled = False

    def put(self, step: int, total: int, preview: Any = None) -> None:
        """Record the newest step (and preview, if any); schedule one delivery unless one is pending."""
        with self._lock:
            self._latest = (step, total)
            if preview is not None:
                self._preview = preview
            if self._scheduled:
                return
            self._scheduled = True
        if not self._loop.is_closed():  # a thread outliving a stopped loop has nobody to tell
            self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            latest, preview = self._latest, self._preview
            self._latest, self._preview, self._scheduled = None, None, False
        if latest is not None:
            self._deliver(latest[0], latest[1], preview)
