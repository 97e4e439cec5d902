"""Low-priority leases on the arbiter: use a model only when it is loaded or fits in free memory right now.

Background work (auto-tagging) takes a spare lease: it never evicts another model and never waits for one
(NoRoom instead), so a user's next job always finds its model where it left it. It starts only while no
other model is in use, and it yields as soon as another client appears:

- The lease lasts one call. Between calls the background model is an ordinary idle model, so a user's model
  that needs its memory evicts it at once (least recently used; an unload is quick) - there is no
  "idle but leased" state to wait for.
- During a call, SpareLease.contended() turns true as soon as anyone else takes or waits for any model
  (Arbiter.use counts its hold before it waits). The holder checks it between steps (an abortable LLM call:
  every token) and stops; the hold ends, the arbiter wakes the waiter, and the waiter evicts the idle model
  if it needs the room.
- What a user can still wait for is a spare load already under way (a llama.cpp load cannot be interrupted;
  it holds the arbiter's lock like every load). It starts only while every other model is idle, and a user
  whose model is already loaded does not take that lock at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from engine.runtime.arbiter import Arbiter, ArbiterError, _Slot
from engine.runtime.managed import Managed


class NoRoom(ArbiterError):
    """The model would have to evict or wait for another one, or another model is in use; try again later."""


def _others_busy(arbiter: Arbiter, slot: _Slot, own: int) -> bool:
    """Another client holds or waits for any model (`own` holds of `slot` are the spare's own)."""
    return any(s.busy > (own if s is slot else 0) for s in list(arbiter._slots.values()))


@dataclass(frozen=True)
class SpareLease:
    """A held spare lease: the model, and whether another client now wants the device."""

    arbiter: Arbiter
    slot: _Slot

    @property
    def model(self) -> Managed:
        """The leased (loaded) model."""
        return self.slot.model

    def contended(self) -> bool:
        """True once another client holds or waits for a model; cheap, callable from any thread."""
        return _others_busy(self.arbiter, self.slot, own=1)


@contextlib.asynccontextmanager
async def spare_lease(arbiter: Arbiter, name: str) -> AsyncIterator[SpareLease]:
    """Like Arbiter.use(name), but NoRoom instead of evicting, waiting, or starting while others work."""
    slot = arbiter._slot(name)
    async with arbiter._lock:
        if _others_busy(arbiter, slot, own=0):
            raise NoRoom(f"{name} stays out of the way: another model is in use")
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
    with arbiter._busy(slot):
        slot.last_used = arbiter._clock()
        yield SpareLease(arbiter, slot)
