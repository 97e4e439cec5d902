"""What a worker op gets besides its payload: progress (published on Redis, latest first) and cancellation.

Cancellation is arq's own abort (the bot calls it when the user cancels): the worker flags the op, and the
model thread stops at its next step (engine.remote.worker._until_aborted).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engine.jobs.progress import LatestProgress
from engine.remote.protocol import b64_png

T = TypeVar("T")


class OpContext:
    """Progress and the cancel flag of one running op; the handler-side twin of engine.jobs.runner.JobContext."""

    def __init__(self, publish: Callable[[dict[str, Any]], None], key: str, attempt: int) -> None:
        self.key = key
        self.attempt = attempt
        self._publish = publish
        self._cancel = threading.Event()
        self._mailbox = LatestProgress(asyncio.get_running_loop(), self._send)

    def should_cancel(self) -> bool:
        """True once the op was aborted (safe from any thread)."""
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        """Flag the op; the model thread raises Cancelled at its next step."""
        self._cancel.set()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Publish progress from any thread (coalesced; a preview is encoded here, off the loop)."""
        self._mailbox.put(step, total, b64_png(preview) if preview is not None else None)

    def _send(self, step: int, total: int, preview: str | None) -> None:
        self._publish({"id": self.key, "step": step, "total": total, "preview": preview})

    async def to_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking model work off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)
