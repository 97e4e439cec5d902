"""The VRAM arbiter with real tiny torch models and a byte budget."""

from __future__ import annotations

import asyncio
import gc
import mmap
import threading
import time
import weakref
from collections.abc import Iterable

import pytest
from torch import nn

from engine.config import Gpu
from engine.runtime.arbiter import MIB, Arbiter, ArbiterError, Event, ModelBusy, ModelTooLarge, UnknownModel
from engine.runtime.managed import Managed


class TinyModel:
    """A Managed nn.Linear stack with a declared footprint."""

    def __init__(
        self, name: str, est_mib: float, kind: str = "test", width: int = 8, delay_s: float = 0.0, resident_mib: int = 0
    ):
        self.name, self.kind, self.width = name, kind, width
        self.est, self.delay_s = int(est_mib * MIB), delay_s
        self.resident_mib = resident_mib  # fresh anonymous pages, written at load: a footprint RSS always shows
        self.module: nn.Module | None = None
        self.pages: mmap.mmap | None = None
        self.load_calls: list[str] = []
        self.unload_calls, self.fail_next = 0, False

    def estimate_bytes(self) -> int:
        return self.est

    def load(self, device: str) -> None:
        self.load_calls.append(device)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            raise OSError(f"weights for {self.name} are corrupt")
        if self.module is None:
            self.module = nn.Sequential(nn.Linear(self.width, self.width), nn.Linear(self.width, self.width))
            self.module.to(device)
        if self.resident_mib and self.pages is None:
            self.pages = mmap.mmap(-1, self.resident_mib * MIB)
            self.pages.write(b"\1" * len(self.pages))

    def unload(self) -> None:
        self.unload_calls += 1
        self.module, pages, self.pages = None, self.pages, None
        if pages is not None:
            pages.close()

    @property
    def loaded(self) -> bool:
        return self.module is not None

    def close(self) -> None:
        self.unload()


class FakeLlm(TinyModel):
    """Records the options every load used (they must never change between reloads)."""

    def __init__(self, name: str, est_mib: float, **options: object):
        super().__init__(name, est_mib, kind="llm")
        self.options = dict(options)
        self.load_kwargs: list[dict] = []

    def load(self, device: str) -> None:
        self.load_kwargs.append({"device": device, **self.options})
        super().load(device)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 0.001  # strictly increasing so LRU order is well defined
        return self.t


def make(budget_mib: float, clock: Clock | None = None, *, models: Iterable[Managed] = (), **kw) -> Arbiter:
    """An arbiter on CPU with a strictly increasing clock and no memory probe, `models` registered."""
    arb = Arbiter(
        budget_bytes=int(budget_mib * MIB), device="cpu", clock=clock or Clock(), probe=lambda: 0, **kw
    )
    for m in models:
        arb.register(m)
    return arb


def test_tiny_model_is_managed() -> None:
    assert isinstance(TinyModel("a", 1), Managed)


def test_budget_from_gpu_section_on_cpu() -> None:
    arb = Arbiter(Gpu(ram_budget_mb=64, idle_ttl_s=30), "cpu")
    assert arb.budget == 64 * MIB
    assert arb.idle_ttl_s == 30


async def test_lru_eviction_order() -> None:
    models = {n: TinyModel(n, 4) for n in "abc"}
    arb = make(9, models=models.values())
    events: list[Event] = []
    arb.subscribe(events.append)
    async with arb.use("a"):
        pass
    async with arb.use("b"):
        pass
    async with arb.use("a"):  # a is now the most recently used
        pass
    async with arb.use("c") as m:
        assert m is models["c"] and m.loaded
    assert [models[n].loaded for n in "abc"] == [True, False, True]
    assert [(e.kind, e.model) for e in events if e.kind == "evicted"] == [("evicted", "b")]
    assert arb.loads == 3 and arb.evictions == 1
    async with arb.use("b"):
        pass
    assert [models[n].loaded for n in "abc"] == [False, True, True]  # a was least recent this time
    assert arb.evictions == 2


async def test_eviction_really_frees_the_tensors() -> None:
    a, b = TinyModel("a", 4), TinyModel("b", 4)
    arb = make(5, models=(a, b))
    async with arb.use("a"):
        weight = weakref.ref(a.module[0].weight)
    assert weight() is not None
    async with arb.use("b"):
        pass
    assert not a.loaded and a.unload_calls == 1
    assert weight() is None


async def test_ttl_sweep_with_injected_clock_and_per_model_override() -> None:
    clock = Clock()
    arb = make(100, clock)
    arb.idle_ttl_s = 10
    short, long = TinyModel("short", 1), TinyModel("long", 1)
    arb.register(short)
    arb.register(long, ttl_s=100)
    events: list[Event] = []
    arb.subscribe(events.append)
    async with arb.use("short"), arb.use("long"):
        pass
    t0 = clock.t
    assert await arb.sweep(now=t0 + 5) == []
    assert await arb.sweep(now=t0 + 11) == ["short"]
    assert not short.loaded and long.loaded
    assert events[-1].kind == "unloaded" and events[-1].model == "short"
    assert await arb.sweep(now=t0 + 101) == ["long"]
    assert arb.unloads == 2


async def test_sweep_never_unloads_a_busy_model() -> None:
    clock = Clock()
    arb = make(100, clock)
    m = TinyModel("m", 1)
    arb.register(m, ttl_s=1)
    async with arb.use("m"):
        assert await arb.sweep(now=clock.t + 1000) == []
        assert m.loaded


async def test_background_sweeper_unloads_idle_models() -> None:
    arb = Arbiter(budget_bytes=10 * MIB, device="cpu", probe=lambda: 0, sweep_interval_s=0.02)
    m = TinyModel("m", 1)
    arb.register(m, ttl_s=0.05)
    arb.start()
    try:
        async with arb.use("m"):
            await asyncio.sleep(0.15)  # busy: the sweeper must leave it alone
            assert m.loaded
        for _ in range(100):
            if not m.loaded:
                break
            await asyncio.sleep(0.02)
        assert not m.loaded
    finally:
        await arb.stop()


async def test_busy_model_is_never_evicted_and_the_loader_waits() -> None:
    a, b = TinyModel("a", 4), TinyModel("b", 4)
    arb = make(5, models=(a, b))
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold_a() -> None:
        async with arb.use("a"):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold_a())
    await holding.wait()
    waiter_done = asyncio.Event()

    async def want_b() -> None:
        async with arb.use("b"):
            waiter_done.set()

    waiter = asyncio.create_task(want_b())
    await asyncio.sleep(0.1)
    assert a.loaded and not b.loaded and not waiter_done.is_set()
    assert [s["busy"] for s in arb.snapshot()] == [1, 1]  # b counts its waiting user
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, waiter), 5)
    assert waiter_done.is_set() and b.loaded and not a.loaded
    assert arb.evictions == 1


async def test_model_bigger_than_budget_raises_clearly() -> None:
    arb = make(8)
    arb.register(TinyModel("huge", 20, kind="diffusion"))
    with pytest.raises(ModelTooLarge, match=r"huge needs ~20 MiB but the whole device budget is 8 MiB"):
        async with arb.use("huge"):
            pass
    assert arb.snapshot()[0]["busy"] == 0


async def test_unknown_model_and_duplicate_registration() -> None:
    arb = make(8)
    arb.register(TinyModel("a", 1))
    with pytest.raises(UnknownModel, match="no model named 'zz' is registered \\(known: a\\)"):
        async with arb.use("zz"):
            pass
    with pytest.raises(ValueError, match="already registered"):
        arb.register(TinyModel("a", 1))
    with pytest.raises(TypeError, match="Managed"):
        arb.register(object())  # type: ignore[arg-type]


async def test_measured_footprint_with_real_rss_drives_planning() -> None:
    arb = Arbiter(budget_bytes=100 * MIB, device="cpu")  # real /proc/self/statm probe
    # declares 1 MiB but writes 72 MiB of fresh anonymous pages at load (malloc could reuse memory earlier tests
    # freed, which RSS would not show)
    big = TinyModel("big", 1, resident_mib=72)
    small = TinyModel("small", 40)
    arb.register(big)
    arb.register(small)
    gc.collect()  # earlier tests' garbage, freed by a collection during the load, would hide the growth
    async with arb.use("big"):
        pass
    snap = {s["name"]: s for s in arb.snapshot()}["big"]
    assert snap["measured_bytes"] >= 64 * MIB
    assert snap["planned_bytes"] == snap["measured_bytes"] > snap["est_bytes"]
    async with arb.use("small"):  # 72 + 40 > 100 only with the measured size: big must go
        pass
    assert not big.loaded and small.loaded
    assert arb.evictions == 1


async def test_events_are_human_and_eta_comes_from_the_last_load() -> None:
    arb = make(100)
    painter = TinyModel("sd15", 50, kind="diffusion", delay_s=0.05)
    thinker = TinyModel("smol", 1, kind="llm")
    other = TinyModel("upscaler", 1, kind="preprocessor")
    for m in (painter, thinker, other):
        arb.register(m)
    events: list[Event] = []
    seen_async: list[str] = []

    async def async_sub(e: Event) -> None:
        seen_async.append(e.kind)

    arb.subscribe(events.append)
    arb.subscribe(async_sub)
    async with arb.use("sd15"), arb.use("smol"), arb.use("upscaler"):
        pass
    loading = [e for e in events if e.kind == "loading"]
    assert [e.message.split(",")[0] for e in loading] == [
        "loading the painter",
        "loading the thinker",
        "loading upscaler",
    ]
    assert loading[0].message.endswith(f"~{loading[0].eta_s:.0f} s")
    assert loading[0].eta_s == 1.0  # size-based guess before any load: 50 MiB is quick
    assert [e.kind for e in events[:2]] == ["loading", "loaded"]
    first_load_s = arb.snapshot()[0]["last_load_s"]
    assert first_load_s >= 0.05
    await arb.unload("sd15")
    events.clear()
    async with arb.use("sd15"):
        pass
    assert events[0].kind == "loading" and events[0].eta_s == first_load_s
    await asyncio.sleep(0)
    assert "loaded" in seen_async


async def test_llm_load_options_are_identical_across_reloads() -> None:
    llm = FakeLlm("thinker", 4, n_gpu_layers=-1, n_ctx=4096, flash_attn=True)
    arb = make(5, models=(llm, TinyModel("painter", 4, kind="diffusion")))
    async with arb.use("thinker"):
        pass
    async with arb.use("painter"):  # evicts the LLM
        pass
    async with arb.use("thinker"):  # reloads it
        pass
    assert len(llm.load_kwargs) == 2
    assert (
        llm.load_kwargs[0]
        == llm.load_kwargs[1]
        == {
            "device": "cpu",
            "n_gpu_layers": -1,
            "n_ctx": 4096,
            "flash_attn": True,
        }
    )


async def test_concurrent_users_of_one_model_load_it_once() -> None:
    arb = make(10)
    m = TinyModel("m", 1, delay_s=0.05)
    arb.register(m)
    seen = []

    async def user() -> None:
        async with arb.use("m") as model:
            seen.append(model.loaded)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(user() for _ in range(4)))
    assert seen == [True] * 4 and len(m.load_calls) == 1 and arb.loads == 1


async def test_failed_load_reports_and_leaves_a_clean_state() -> None:
    arb = make(10)
    m = TinyModel("m", 1)
    m.fail_next = True
    arb.register(m)
    events: list[Event] = []
    arb.subscribe(events.append)
    with pytest.raises(OSError, match="corrupt"):
        async with arb.use("m"):
            pass
    assert events[-1].kind == "failed" and "failed to load" in events[-1].message
    snap = arb.snapshot()[0]
    assert (snap["state"], snap["busy"]) == ("unloaded", 0)
    async with arb.use("m") as model:  # the next try works
        assert model.loaded


async def test_cancelled_loader_leaves_a_consistent_state() -> None:
    slow, other = TinyModel("slow", 4, delay_s=0.2), TinyModel("other", 4)
    arb = make(5, models=(slow, other))
    started = threading.Event()
    orig = slow.load

    def load(device: str) -> None:
        started.set()
        orig(device)

    slow.load = load  # type: ignore[method-assign]

    async def use_slow() -> None:
        async with arb.use("slow"):
            pass

    task = asyncio.create_task(use_slow())
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with arb.use("other"):  # waits for the shielded load to end, then evicts it
        pass
    await asyncio.sleep(0.3)  # a load thread left running would finish by now
    assert not slow.loaded and other.loaded
    assert arb.evictions == 1 and arb.used_bytes == 4 * MIB
    assert {s["name"]: s["busy"] for s in arb.snapshot()} == {"slow": 0, "other": 0}


async def test_explicit_unload_refuses_a_busy_model() -> None:
    arb = make(10)
    arb.register(TinyModel("m", 1))
    async with arb.use("m"):
        with pytest.raises(ModelBusy, match="in use"):
            await arb.unload("m")
    assert await arb.unload("m") is True
    assert await arb.unload("m") is False


async def test_nested_use_that_cannot_fit_times_out_with_a_clear_error() -> None:
    arb = make(5, models=(TinyModel("thinker", 4, kind="llm"), TinyModel("painter", 4, kind="diffusion")),
               wait_timeout_s=0.2)  # fmt: skip
    async with arb.use("thinker"):
        with pytest.raises(
            ArbiterError, match=r"waited 0 s for room to load painter; busy models: thinker \(1\)"
        ):
            async with arb.use("painter"):
                pass
    async with arb.use("painter") as m:  # once the thinker is released, it fits
        assert m.loaded
