"""A worker's arq consumers, one per queue it reads (the shared one and its own), drawing on one job limit."""

from __future__ import annotations

import asyncio
from typing import Any

from arq import Worker


class Slots:
    """A worker's max_jobs, shared by its consumers: a job starts on any of them only while one is free."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_jobs must be at least 1, got {limit}")
        self.limit = limit
        self.consumers: list[Consumer] = []

    def free(self) -> int:
        """Slots no consumer is using."""
        return max(0, self.limit - sum(c.job_counter for c in self.consumers))


class Consumer(Worker):
    """An arq Worker whose max_jobs is its own jobs plus what its Slots leave free (arq checks it per job)."""

    def __init__(self, *args: Any, slots: Slots, **kwargs: Any) -> None:
        self._slots: Slots | None = None
        super().__init__(*args, max_jobs=slots.limit, **kwargs)
        self._slots = slots
        slots.consumers.append(self)

    @property  # type: ignore[override]
    def max_jobs(self) -> int:
        """arq starts a job while job_counter < max_jobs, so this is "while the worker has a free slot"."""
        return self._own_max if self._slots is None else self.job_counter + self._slots.free()

    @max_jobs.setter
    def max_jobs(self, value: int) -> None:
        self._own_max = value


def make_consumers(queues: list[str], limit: int, **worker_kwargs: Any) -> list[Consumer]:
    """One Consumer per queue, sharing `limit` job slots."""
    slots = Slots(limit)
    return [Consumer(queue_name=q, slots=slots, **worker_kwargs) for q in queues]


async def run_consumers(consumers: list[Consumer]) -> None:
    """Run every consumer; when one fails (Redis went away) stop the others and raise its error."""
    tasks = [asyncio.ensure_future(c.async_run()) for c in consumers]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()
