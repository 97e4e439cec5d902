"""Where model compute runs off the event loop: on CPU in one thread, so every torch call shares one OpenMP team.

Each thread that calls into torch on CPU leads its own OpenMP team, and with more teams than cores they take
cores from each other at every small op. On our 2-core CPU, a default job (render, then its CLIP score) in
worker threads took 184-208 ms for a 1-step 128² draft and 1.41-1.52 s for 8 steps; in one thread, 165-173 ms
and 1.18-1.26 s. So on CPU the renders, clips, scores and model loads of a process take turns in one thread, as
in a plain diffusers script. On a GPU the work queues on the device anyway, and each call gets a worker thread
(asyncio.to_thread), so a load can overlap a render.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
THREAD_NAME = "atelier-compute"


class ComputeLane:
    """Runs blocking model work: one shared thread on CPU, a worker thread per call elsewhere."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._pool: ThreadPoolExecutor | None = None
        self.shared = device == "cpu"

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` off the event loop (with the caller's context variables, as to_thread)."""
        if not self.shared:
            return await asyncio.to_thread(fn, *args, **kwargs)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def load(self, load: Callable[[str], None], kind: str) -> None:
        """A model's load onto this device: in the lane, but an LLM's in a worker thread (llama.cpp runs its own
        threads, and a chat must not wait behind a render)."""
        if kind == "llm":
            await asyncio.to_thread(load, self.device)
        else:
            await self.run(load, self.device)

    def close(self) -> None:
        """Let the thread end once its queued work is done (a later run starts a new one)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
