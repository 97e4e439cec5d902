"""The compute lane: on CPU every model call takes turns in one thread; elsewhere each call gets a worker thread."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

from engine.runtime.lane import THREAD_NAME, ComputeLane

WHO = contextvars.ContextVar("who", default="nobody")


def _busy(spans: list[tuple[str, float, float]], label: str) -> str:
    start = time.perf_counter()
    time.sleep(0.05)
    spans.append((threading.current_thread().name, start, time.perf_counter()))
    return f"{label}:{WHO.get()}"


async def _two_at_once(lane: ComputeLane) -> tuple[list[str], list[tuple[str, float, float]]]:
    spans: list[tuple[str, float, float]] = []
    WHO.set("caller")
    out = await asyncio.gather(lane.run(_busy, spans, "a"), lane.run(_busy, spans, label="b"))
    return list(out), sorted(spans, key=lambda s: s[1])


async def test_on_cpu_calls_take_turns_in_one_named_thread_with_the_callers_context() -> None:
    lane = ComputeLane("cpu")
    try:
        out, spans = await _two_at_once(lane)
    finally:
        lane.close()
    assert out == ["a:caller", "b:caller"]
    assert {name for name, _, _ in spans} == {f"{THREAD_NAME}_0"}
    assert spans[1][1] >= spans[0][2]  # the second began after the first ended


async def test_on_a_gpu_each_call_gets_its_own_worker_thread() -> None:
    lane = ComputeLane("cuda")
    out, spans = await _two_at_once(lane)
    assert out == ["a:caller", "b:caller"]
    names = {name for name, _, _ in spans}
    assert len(names) == 2 and not any(n.startswith(THREAD_NAME) for n in names)
    assert spans[1][1] < spans[0][2]  # they overlapped


async def test_an_llm_loads_outside_the_lane_so_a_chat_never_waits_behind_a_render() -> None:
    lane = ComputeLane("cpu")
    where: dict[str, str] = {}
    release = threading.Event()
    try:
        render = asyncio.ensure_future(lane.run(release.wait, 5))  # a long render holds the lane
        await asyncio.sleep(0.05)
        await asyncio.wait_for(lane.load(lambda d: where.update(llm=threading.current_thread().name), "llm"), 2)
        assert not where["llm"].startswith(THREAD_NAME) and not render.done()
        release.set()
        await render
        await lane.load(lambda d: where.update(sd=threading.current_thread().name), "diffusion")
        assert where["sd"].startswith(THREAD_NAME)
    finally:
        release.set()
        lane.close()
