"""Cross-user batching: compatible requests that arrive within a short window share one pipeline call.

`Batcher` is generic: callers submit (key, size, item); one lane runs groups in turn (so a process never
runs two pipeline calls at once), oldest request first, each group holding requests of one key up to
`max_batch` images. A request waits at most `window_s` for company, and only while `others()` (sync or
async) says more requests are on their way. `DiffusionBatcher` binds it to the arbiter and DiffusionModel.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("atelier.batching")
RunGroup = Callable[[Hashable, list[Any]], Awaitable[list[Any]]]
Others = Callable[[], int | Awaitable[int]]


@dataclass
class _Entry:
    key: Hashable
    size: int
    item: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Groups submitted items by key and runs each group with `run_group(key, items) -> outcomes`."""

    def __init__(
        self,
        run_group: RunGroup,
        max_batch: int,
        window_s: float,
        others: Others | None = None,
        on_group: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"the batch window must not be negative, got {window_s}")
        self.run_group = run_group
        self.max_batch = max_batch
        self.window_s = window_s
        self.others = others
        self.on_group = on_group  # (requests, images) after each group, for metrics
        self._pending: list[_Entry] = []
        self._changed = asyncio.Event()
        self._lane: asyncio.Task | None = None
        self._running = 0  # items in the group being run now
        self._solo = itertools.count()

    @property
    def inflight(self) -> int:
        """Items submitted and not yet answered (waiting or running)."""
        return len(self._pending) + self._running

    async def submit(self, key: Hashable | None, size: int, item: Any) -> Any:
        """Queue `item` (of `size` images) and return its outcome; key None means it never batches."""
        if size < 1:
            raise ValueError(f"a batch item needs at least one image, got {size}")
        if key is None:
            key = ("solo", next(self._solo))
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(_Entry(key, size, item, fut))
        self._changed.set()
        if self._lane is None or self._lane.done():
            self._lane = asyncio.get_running_loop().create_task(self._run_lane())
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            self._pending = [e for e in self._pending if e.future is not fut]
            raise

    def _group(self, key: Hashable) -> list[_Entry]:
        group, images = [], 0
        for e in self._pending:
            if e.key == key and (not group or images + e.size <= self.max_batch):
                group.append(e)
                images += e.size
        return group

    async def _wanting(self, group: list[_Entry]) -> bool:
        """True while the group could still grow and someone may still join it."""
        if sum(e.size for e in group) >= self.max_batch or self.window_s == 0:
            return False
        if self.others is None:
            return True
        try:
            n = self.others()
            if inspect.isawaitable(n):
                n = await n
            return n > 0
        except Exception:  # noqa: BLE001 - a broken hint must not stall the lane
            log.exception("batcher hint failed")
            return False

    async def _run_lane(self) -> None:
        while self._pending:
            head = self._pending[0]
            group = self._group(head.key)
            deadline = head.arrived + self.window_s
            while await self._wanting(group) and (left := deadline - time.monotonic()) > 0:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.01))
                group = self._group(head.key)
            await self._run(group)

    async def _run(self, group: list[_Entry]) -> None:
        ids = {id(e) for e in group}
        self._pending = [e for e in self._pending if id(e) not in ids]
        self._running = len(group)
        try:
            outcomes = await self.run_group(group[0].key, [e.item for e in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"run_group returned {len(outcomes)} outcomes for {len(group)} items")
        except BaseException as e:  # noqa: BLE001 - the whole group failed: every member sees why
            outcomes = [e] * len(group)
            if isinstance(e, asyncio.CancelledError):
                for entry in group:
                    if not entry.future.done():
                        entry.future.cancel()
                raise
        finally:
            self._running = 0
        if self.on_group is not None:
            self.on_group(len(group), sum(e.size for e in group))
        for entry, out in zip(group, outcomes, strict=True):
            if entry.future.done():
                continue
            if isinstance(out, BaseException):
                entry.future.set_exception(out)
            else:
                entry.future.set_result(out)

    async def close(self) -> None:
        """Stop the lane; items still waiting get RuntimeError."""
        if self._lane is not None:
            self._lane.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lane
        for e in self._pending:
            if not e.future.done():
                e.future.set_exception(RuntimeError("the batcher was closed"))
        self._pending.clear()


@dataclass
class RenderItem:
    """One generation request waiting for a pipeline call."""

    model: Any  # a registered DiffusionModel
    req: Any  # GenerationRequest
    progress: Callable[[int, int, Any], None] | None = None
    should_cancel: Callable[[], bool] | None = None


class DiffusionBatcher:
    """Runs DiffusionModel requests through a Batcher: groups of one use generate(), larger groups one call."""

    def __init__(
        self, arbiter: Any, max_batch: int, window_s: float, others: Others | None = None,
        on_group: Callable[[int, int], None] | None = None,
    ) -> None:  # fmt: skip
        self.arbiter = arbiter
        self.batcher = Batcher(self._run_group, max_batch, window_s, others, on_group)

    @property
    def inflight(self) -> int:
        """Requests submitted and not yet answered."""
        return self.batcher.inflight

    async def generate(self, item: RenderItem) -> list[Any]:
        """The request's images (raises what DiffusionModel.generate would raise for it alone)."""
        from engine.runtime.diffusion.multi import compat_key

        ck = compat_key(item.req)
        key = None if ck is None else (item.model.name, *ck)
        return await self.batcher.submit(key, item.req.batch, item)

    async def _run_group(self, key: Hashable, items: list[RenderItem]) -> list[Any]:
        from engine.runtime.diffusion.multi import generate_group

        async with self.arbiter.use(items[0].model.name) as loaded:
            if len(items) == 1:
                it = items[0]
                try:
                    return [await self.arbiter.lane.run(loaded.generate, it.req, it.progress, it.should_cancel)]
                except Exception as e:  # noqa: BLE001 - handed to the one waiting request
                    return [e]
            return await self.arbiter.lane.run(
                generate_group,
                loaded,
                [i.req for i in items],
                [i.progress for i in items],
                [i.should_cancel for i in items],
            )

    async def close(self) -> None:
        """Stop the lane."""
        await self.batcher.close()
