"""The loop watchdog: a deliberate block is logged with the code that held the loop, counted, and on /metrics."""

from __future__ import annotations

import asyncio
import logging
import time

from engine.looplag import LoopWatchdog, Stall
from engine.metrics import Metrics, MetricsServer
from tests.discord_support import running_env
from tests.queue_support import http_get
from tests.test_metrics import _value

BLOCK_S = 0.4  # over the 250 ms stall threshold
LAG = "atelier_event_loop_lag_seconds"


async def hold_the_loop_with_a_blocking_sleep() -> None:
    """The culprit: a coroutine that blocks the event loop (what the watchdog must name)."""
    time.sleep(BLOCK_S)


async def _block_once(dog: LoopWatchdog) -> None:
    """Block the loop once, then let the loop tick until the watchdog has recorded the stall."""
    before = len(dog.stalls)
    await asyncio.get_running_loop().create_task(hold_the_loop_with_a_blocking_sleep())
    for _ in range(100):
        if len(dog.stalls) > before:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the watchdog recorded no stall for a {BLOCK_S}s block: {dog.stats()}")


async def test_a_blocked_loop_is_logged_with_the_culprit_and_counted(caplog) -> None:
    seen: list[Stall] = []
    dog = LoopWatchdog(on_stall=seen.append).start()
    try:
        await asyncio.sleep(0.15)  # a few normal ticks first
        with caplog.at_level(logging.WARNING, logger="atelier.looplag"):
            await _block_once(dog)
    finally:
        dog.stop()
    culprit = hold_the_loop_with_a_blocking_sleep.__name__
    assert seen and seen == dog.stalls and dog.stats()["stalls"] == len(seen)
    assert any(culprit in s.stack and s.seconds > dog.stall_s for s in seen), [s.stack for s in seen]
    logged = [r.getMessage() for r in caplog.records if r.name == "atelier.looplag"]
    assert any("event loop was blocked for" in m and culprit in m for m in logged), logged


async def test_the_bot_exports_loop_lag_and_stalls_on_metrics(tmp_path, monkeypatch) -> None:
    async with running_env(tmp_path, monkeypatch) as env:
        env.services.metrics = metrics = Metrics("bot", "test-bot")
        server = MetricsServer(metrics, "127.0.0.1", 0)
        port = await server.start()
        try:
            dog = env.bot.watchdog
            assert dog is not None
            await asyncio.sleep(0.2)  # ticks observed into the histogram
            text = (await http_get(f"http://127.0.0.1:{port}/metrics"))[1]
            ticks = _value(text, f"{LAG}_count")
            assert ticks >= 1 and _value(text, f'{LAG}_bucket{{le="+Inf"}}') == ticks
            stalls_before = _value(text, "atelier_event_loop_stalls_total")
            await _block_once(dog)
            status, text = await http_get(f"http://127.0.0.1:{port}/metrics")
        finally:
            await server.stop()
    assert status == 200
    assert _value(text, f"{LAG}_count") > ticks
    assert _value(text, f'{LAG}_bucket{{le="0.25"}}') < _value(text, f"{LAG}_count")  # the block's late tick
    assert _value(text, f"{LAG}_sum") >= BLOCK_S - dog.interval_s
    assert _value(text, "atelier_event_loop_stalls_total") >= stalls_before + 1
    assert any(hold_the_loop_with_a_blocking_sleep.__name__ in s.stack for s in dog.stalls)
