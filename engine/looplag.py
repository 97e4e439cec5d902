"""Event-loop watchdog: lag measured all the time by a periodic tick, and every stall reported with its culprit.

A tick scheduled every `interval_s` records how late it ran (the loop's lag). A monitor thread watches the
last tick: when the loop has not ticked for `stall_s`, it takes the loop thread's stack at that moment, so the
log names the code that is holding the loop, and records the stall once it ends with its full duration.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("atelier.looplag")
KEEP = 20_000  # lag samples kept for percentiles
STACK_FRAMES = 40


@dataclass
class Stall:
    """One period in which the loop did not run: how long, and where its thread was."""

    seconds: float
    stack: str
    at: float = field(default_factory=time.time)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class LoopWatchdog:
    """Start it on a running loop; `observe(seconds)` (e.g. a Prometheus histogram) gets every lag sample."""

    def __init__(
        self,
        *,
        interval_s: float = 0.05,
        stall_s: float = 0.25,
        observe: Callable[[float], None] | None = None,
        on_stall: Callable[[Stall], None] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.stall_s = stall_s
        self.observe = observe
        self.on_stall = on_stall
        self.lags: deque[float] = deque(maxlen=KEEP)
        self.stalls: list[Stall] = []
        self._last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._pending: tuple[float, str] | None = None  # (started, stack) of a stall in progress
        self._lock = threading.Lock()

    def start(self) -> LoopWatchdog:
        """Begin ticking on the running loop and watching it from a thread."""
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._last = time.monotonic()
        self._schedule(self._last + self.interval_s)
        self._monitor = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._monitor.start()
        return self

    def _schedule(self, due: float) -> None:
        assert self._loop is not None
        self._handle = self._loop.call_at(
            self._loop.time() + max(0.0, due - time.monotonic()), self._tick, due
        )

    def _tick(self, due: float) -> None:
        now = time.monotonic()
        lag = max(0.0, now - due)
        self.lags.append(lag)
        if self.observe is not None:
            self.observe(lag)
        with self._lock:
            self._last = now
            pending, self._pending = self._pending, None
        if pending is None and lag > self.stall_s:  # the monitor could not sample: the GIL was held throughout
            pending = (
                now - lag + self.stall_s,
                "(not sampled: a C call held the GIL while the loop was blocked)",
            )
        if pending is not None:
            started, stack = pending
            stall = Stall(now - started + self.stall_s, stack)
            self.stalls.append(stall)
            if self.on_stall is not None:
                self.on_stall(stall)
            log.warning("event loop was blocked for %.0f ms; it was in:\n%s", stall.seconds * 1000, stack)
        if not self._stop.is_set():
            self._schedule(now + self.interval_s)

    def _watch(self) -> None:
        while not self._stop.wait(self.stall_s / 5):
            with self._lock:
                idle = time.monotonic() - self._last
                if idle < self.stall_s + self.interval_s or self._pending is not None:
                    continue
                self._pending = (time.monotonic(), self._stack())

    def _stack(self) -> str:
        frame = sys._current_frames().get(self._thread_id or 0)
        if frame is None:
            return "(no stack)"
        return "".join(traceback.format_stack(frame, limit=STACK_FRAMES))

    def stats(self) -> dict:
        """Lag percentiles (ms), the number of stalls and the longest one."""
        ms = [x * 1000 for x in self.lags]
        return {
            "ticks": len(ms),
            "p50_ms": round(_pct(ms, 0.5), 2),
            "p99_ms": round(_pct(ms, 0.99), 2),
            "max_ms": round(max(ms), 2) if ms else 0.0,
            "stalls": len(self.stalls),
            "longest_stall_ms": round(max((s.seconds for s in self.stalls), default=0.0) * 1000, 1),
        }

    def stop(self) -> None:
        """Stop ticking and watching."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._monitor is not None:
            self._monitor.join(timeout=1)
