"""Low-priority leases on the arbiter: use a model only when it is loaded or fits in free memory right now.

Background work (auto-tagging) takes a spare lease: it never evicts another model and never waits for one
(NoRoom instead), so a user's next job always finds its model where it left it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from engine.runtime.arbiter import Arbiter, ArbiterError
from engine.runtime.managed import Managed


class NoRoom(ArbiterError):
    """The model would have to evict or wait for another one; try again later."""


@contextlib.asynccontextmanager
async def spare_lease(arbiter: Arbiter, name: str) -> AsyncIterator[Managed]:
    """Like Arbiter.use(name), but NoRoom instead of evicting or waiting."""
    slot = arbiter._slot(name)
    async with arbiter._lock:
        if slot.state == "unloaded":
            others = [s for s in arbiter._slots.values() if s is not slot and s.state != "unloaded"]
            if arbiter.budget - sum(s.planned for s in others) < slot.planned:
                raise NoRoom(f"{name} would have to evict another model")
            slot.busy += 1
            try:
                await asyncio.shield(arbiter._load_now(slot))
            except BaseException:
                slot.busy -= 1
                raise
        elif slot.state == "loaded":
            slot.busy += 1
        else:
            raise NoRoom(f"{name} is {slot.state}")
    try:
        slot.last_used = arbiter._clock()
        yield slot.model
    finally:
        slot.busy -= 1
        slot.last_used = arbiter._clock()
        arbiter._notify()
