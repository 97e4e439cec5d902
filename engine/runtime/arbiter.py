"""The VRAM arbiter: the only component that decides which models live on the device."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.config import Gpu
from engine.runtime.devices import MIB, Probe, device_budget, resolve_device
from engine.runtime.lane import ComputeLane
from engine.runtime.managed import Managed

log = logging.getLogger(__name__)
FRIENDLY = {"llm": "the thinker", "diffusion": "the painter"}
GUESS_BYTES_PER_S = 400 * MIB  # a size-based load-time guess before the first measured load


class ArbiterError(RuntimeError):
    """Base class for arbiter errors."""


class ModelTooLarge(ArbiterError):
    """A single model needs more than the whole device budget."""


class UnknownModel(ArbiterError, LookupError):
    """use()/unload() named a model that was never registered."""


class ModelBusy(ArbiterError):
    """An explicit unload was asked for a model that is in use."""


@dataclass(frozen=True)
class Event:
    """Something the arbiter did; `message` is written for humans."""

    kind: str  # "loading" | "loaded" | "evicted" | "unloaded" | "failed"
    model: str
    message: str
    eta_s: float | None = None


@dataclass
class _Slot:
    model: Managed
    ttl_s: float
    state: str = "unloaded"  # unloaded | loading | loaded | unloading
    busy: int = 0
    last_used: float = 0.0
    measured: int | None = None
    load_s: float | None = None
    loads: int = 0
    _est: tuple[int, int] | None = None  # (loads, bytes): a loaded model's estimate, read once per load

    @property
    def estimate(self) -> int:
        """The model's estimate; while it is loaded, the one read for this load (it reads weight files)."""
        if self.state == "loaded" and self._est is not None and self._est[0] == self.loads:
            return self._est[1]
        est = int(self.model.estimate_bytes())
        self._est = (self.loads, est) if self.state == "loaded" else None
        return est

    @property
    def planned(self) -> int:
        """Bytes used for planning: the estimate, or max(estimate, measured) once measured."""
        return self.estimate if self.measured is None else max(self.estimate, self.measured)


def friendly(model: Managed) -> str:
    """The human name of a model ("the painter", "the thinker", or its own name)."""
    return FRIENDLY.get(model.kind, model.name)


class Arbiter:
    """Loads models on demand, evicts idle ones least-recently-used first, and never touches busy ones."""

    def __init__(
        self,
        gpu: Gpu | None = None,
        device: str | None = None,
        *,
        budget_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[], int] | None = None,
        sweep_interval_s: float | None = None,
        wait_timeout_s: float | None = None,
    ):
        gpu = gpu or Gpu()
        self.device = resolve_device(device or gpu.device)
        self.budget = int(budget_bytes) if budget_bytes is not None else device_budget(gpu, self.device)
        if self.budget <= 0:
            raise ArbiterError(f"the device budget must be positive, got {self.budget} bytes")
        self.idle_ttl_s = gpu.idle_ttl_s
        self.sweep_interval_s = sweep_interval_s
        self.wait_timeout_s = wait_timeout_s
        self._clock = clock
        self._probe = Probe(self.device)
        self._custom_probe = probe
        self._slots: dict[str, _Slot] = {}
        self._lock = asyncio.Lock()  # serializes every load/unload
        self._changed = asyncio.Event()
        self._subscribers: list[Callable[[Event], Any]] = []
        self._sweeper: asyncio.Task | None = None
        self._pending: set[asyncio.Future] = set()
        self.loads = self.evictions = self.unloads = 0
        self.lane = ComputeLane(self.device)  # where model work runs (one thread on CPU)

    def register(self, model: Managed, ttl_s: float | None = None) -> None:
        """Add a model (not loaded); ttl_s overrides gpu.idle_ttl_s for it."""
        if not isinstance(model, Managed):
            raise TypeError(f"{model!r} does not implement engine.runtime.managed.Managed")
        if model.name in self._slots:
            raise ValueError(f"a model named {model.name!r} is already registered")
        ttl = ttl_s if ttl_s is not None else getattr(model, "idle_ttl_s", None) or self.idle_ttl_s
        if ttl <= 0:
            raise ValueError(f"idle TTL for {model.name!r} must be positive, got {ttl}")
        self._slots[model.name] = _Slot(model=model, ttl_s=float(ttl), last_used=self._clock())

    def model(self, name: str) -> Managed:
        """The registered model object (without loading it)."""
        return self._slot(name).model

    def subscribe(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call `callback(event)` (sync or async) on every event; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def _emit(self, kind: str, slot: _Slot, message: str, eta_s: float | None = None) -> None:
        event = Event(kind=kind, model=slot.model.name, message=message, eta_s=eta_s)
        for cb in list(self._subscribers):
            try:
                out = cb(event)
                if inspect.isawaitable(out):
                    task = asyncio.ensure_future(out)
                    self._pending.add(task)  # keep a reference until the subscriber is done
                    task.add_done_callback(self._pending.discard)
            except Exception:
                log.exception("arbiter event subscriber failed on %s", event)

    def _slot(self, name: str) -> _Slot:
        try:
            return self._slots[name]
        except KeyError:
            known = ", ".join(sorted(self._slots)) or "none"
            raise UnknownModel(f"no model named {name!r} is registered (known: {known})") from None

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    @contextlib.asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[Managed]:
        """Hold `name` loaded (and un-evictable) for the duration of the block."""
        slot = self._slot(name)
        slot.busy += 1
        with self._busy(slot):
            if slot.state != "loaded":
                await self._ensure_loaded(slot)
            slot.last_used = self._clock()
            yield slot.model

    @contextlib.contextmanager
    def _busy(self, slot: _Slot) -> Iterator[None]:
        """End a hold the caller counted in slot.busy: un-count it, stamp its use and wake waiters, come what may."""
        try:
            yield
        finally:
            slot.busy -= 1
            slot.last_used = self._clock()
            self._notify()

    async def _ensure_loaded(self, slot: _Slot) -> None:
        deadline = None if self.wait_timeout_s is None else time.monotonic() + self.wait_timeout_s
        while True:
            async with self._lock:
                if slot.state == "loaded":
                    return
                need = slot.planned
                if need > self.budget:
                    raise ModelTooLarge(
                        f"{slot.model.name} needs ~{need / MIB:.0f} MiB but the whole device budget is "
                        f"{self.budget / MIB:.0f} MiB; pick a smaller model or raise the budget"
                    )
                victims = None if slot.state != "unloaded" else self._victims(slot, need)
                if victims is not None:
                    # shielded: a cancelled caller must not leave models half-evicted or half-loaded
                    await asyncio.shield(self._swap(victims, slot))
                    return
                waiter = self._changed
            # busy models hold the memory (or a transition is running): wait for a release
            try:
                await asyncio.wait_for(
                    waiter.wait(), None if deadline is None else deadline - time.monotonic()
                )
            except TimeoutError:
                busy = ", ".join(
                    f"{s.model.name} ({s.busy})" for s in self._slots.values() if s.busy and s is not slot
                )
                raise ArbiterError(
                    f"waited {self.wait_timeout_s:.0f} s for room to load {slot.model.name}; "
                    f"busy models: {busy or 'none'}"
                ) from None

    async def _swap(self, victims: list[_Slot], slot: _Slot) -> None:
        try:
            for victim in victims:
                await self._unload_now(victim, "evicted", "stepped aside to make room")
        finally:
            for victim in victims:
                if victim.state == "unloading":
                    victim.state = "loaded"  # an earlier eviction failed: the rest stay loaded
        await self._load_now(slot)

    def _victims(self, slot: _Slot, need: int) -> list[_Slot] | None:
        """Idle models to evict (LRU first) so `need` fits, or None if busy models prevent it."""
        others = [s for s in self._slots.values() if s is not slot and s.state != "unloaded"]
        free = self.budget - sum(s.planned for s in others)
        chosen = []
        for s in sorted(
            (s for s in others if s.busy == 0 and s.state == "loaded"), key=lambda s: s.last_used
        ):
            if free >= need:
                break
            chosen.append(s)
            free += s.planned
        if free < need:
            return None
        for s in chosen:
            s.state = "unloading"  # nobody can take it on the fast path from here on
        return chosen

    def _eta(self, slot: _Slot) -> float:
        if slot.load_s is not None:
            return slot.load_s
        warmup = float(getattr(slot.model, "warmup_s", 0.0))  # e.g. torch.compile at load
        return max(1.0, slot.planned / GUESS_BYTES_PER_S) + warmup

    def _sample(self) -> tuple[int, int]:
        return (self._custom_probe(), 0) if self._custom_probe else self._probe.sample()

    async def _load_now(self, slot: _Slot) -> None:
        name = friendly(slot.model)
        eta = self._eta(slot)
        slot.state = "loading"
        self._emit("loading", slot, f"loading {name}, ~{max(1, round(eta))} s", eta)
        start = time.perf_counter()
        try:
            before = await asyncio.to_thread(self._sample)
            await self.lane.load(slot.model.load, slot.model.kind)
            after = await asyncio.to_thread(self._sample)
        except BaseException as e:
            await asyncio.to_thread(self._release_quietly, slot.model)
            slot.state = "unloaded"
            self._emit("failed", slot, f"{name} failed to load: {e}")
            self._notify()
            raise
        slot.load_s = time.perf_counter() - start
        slot.measured = self._probe.delta(before, after, slot.estimate)
        slot.state = "loaded"
        slot.loads += 1
        self.loads += 1
        slot.last_used = self._clock()
        mib = slot.measured / MIB
        self._emit("loaded", slot, f"{name} is ready ({slot.load_s:.1f} s, {mib:.0f} MiB)")
        self._notify()

    def _release(self, model: Managed) -> None:
        """Blocking: unload and give the memory back to the allocator/driver."""
        try:
            model.unload()
        finally:
            gc.collect()
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    def _release_quietly(self, model: Managed) -> None:
        """Clean up after a failed load; the load error is what the caller needs to see."""
        try:
            self._release(model)
        except Exception:
            log.exception("cleanup after a failed load of %s also failed", model.name)

    async def _unload_now(self, slot: _Slot, kind: str, why: str) -> None:
        slot.state = "unloading"
        try:
            await asyncio.to_thread(self._release, slot.model)
        finally:
            slot.state = "unloaded"
            self._notify()
        if kind == "evicted":
            self.evictions += 1
        else:
            self.unloads += 1
        self._emit(kind, slot, f"{friendly(slot.model)} {why}")

    async def unload(self, name: str) -> bool:
        """Unload an idle model now; False if it was not loaded; ModelBusy if it is in use."""
        slot = self._slot(name)
        async with self._lock:
            if slot.state != "loaded":
                return False
            if slot.busy:
                raise ModelBusy(f"{name} is in use by {slot.busy} job(s) and cannot be unloaded now")
            await asyncio.shield(self._unload_now(slot, "unloaded", "was unloaded"))
            return True

    async def sweep(self, now: float | None = None) -> list[str]:
        """Unload models idle longer than their TTL; returns their names."""
        now = self._clock() if now is None else now
        done = []
        async with self._lock:
            for slot in list(self._slots.values()):
                idle = slot.state == "loaded" and slot.busy == 0
                if idle and now - slot.last_used > slot.ttl_s:
                    why = f"went to sleep after {now - slot.last_used:.0f} s idle"
                    await asyncio.shield(self._unload_now(slot, "unloaded", why))
                    done.append(slot.model.name)
        return done

    def start(self) -> None:
        """Start the periodic background sweep (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            ttls = [s.ttl_s for s in self._slots.values()] or [self.idle_ttl_s]
            await asyncio.sleep(self.sweep_interval_s or min(60.0, max(0.05, min(ttls) / 4)))
            try:
                await self.sweep()
            except Exception:
                log.exception("arbiter sweep failed")

    async def stop(self) -> None:
        """Stop the background sweep."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop sweeping, then close every model (final release at shutdown)."""
        await self.stop()
        async with self._lock:
            for slot in self._slots.values():
                if slot.busy:
                    log.warning("closing %s while %d job(s) still use it", slot.model.name, slot.busy)
                await asyncio.to_thread(slot.model.close)
                slot.state = "unloaded"
        self.lane.close()

    @property
    def used_bytes(self) -> int:
        """Planned bytes of everything loaded or in transition."""
        return sum(s.planned for s in self._slots.values() if s.state != "unloaded")

    def snapshot(self) -> list[dict[str, Any]]:
        """One dict per registered model, for /queue and metrics."""
        now = self._clock()
        return [
            {
                "name": s.model.name,
                "kind": s.model.kind,
                "friendly": friendly(s.model),
                "loaded": s.state == "loaded",
                "state": s.state,
                "busy": s.busy,
                "est_bytes": s.estimate,
                "measured_bytes": s.measured,
                "planned_bytes": s.planned,
                "last_used": s.last_used,
                "idle_s": max(0.0, now - s.last_used),
                "ttl_s": s.ttl_s,
                "loads": s.loads,
                "last_load_s": s.load_s,
            }
            for s in self._slots.values()
        ]

    def stats(self) -> dict[str, int]:
        """Arbiter-wide counters and sizes."""
        return {
            "budget_bytes": self.budget,
            "used_bytes": self.used_bytes,
            "loads": self.loads,
            "evictions": self.evictions,
            "unloads": self.unloads,
        }
