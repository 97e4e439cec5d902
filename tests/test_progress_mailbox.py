"""The progress mailbox between a model thread and the loop: latest first, throttled, no preview lost."""

from __future__ import annotations

import asyncio
import time

from engine.jobs.progress import LatestProgress


async def _collect(puts: list[tuple[int, int, object, float]], min_interval_s: float) -> list[tuple[int, object]]:
    """Put each (step, total, preview, then sleep s) from a worker thread; what the loop was given, in order."""
    got: list[tuple[int, object]] = []
    box = LatestProgress(asyncio.get_running_loop(), lambda s, t, p: got.append((s, p)), min_interval_s)

    def produce() -> None:
        for step, total, preview, pause in puts:
            box.put(step, total, preview)
            time.sleep(pause)

    await asyncio.to_thread(produce)
    await asyncio.sleep(0.05)  # let the last call_soon_threadsafe run
    return got


async def test_fast_steps_reach_the_loop_throttled_the_first_and_last_at_once_with_their_preview() -> None:
    puts = [(n, 40, "preview-10" if n == 10 else None, 0.0) for n in range(1, 41)]
    got = await _collect(puts, min_interval_s=5.0)
    assert got[0][0] == 1 and got[-1][0] == 40  # the first step at once, the last one always
    assert len(got) == 2  # everything between was held for the interval and folded into the last
    assert got[-1][1] == "preview-10"  # a held preview rides along with the next delivery


async def test_steps_slower_than_the_interval_all_arrive() -> None:
    got = await _collect([(n, 4, None, 0.08) for n in range(1, 5)], min_interval_s=0.02)
    assert [s for s, _ in got] == [1, 2, 3, 4]
