"""The event loop keeps ticking while a real (tiny) generation, a real LLM agent turn and bad uploads arrive.

Measures loop lag with a 5 ms ticker and the bot's own watchdog (which names the code behind any stall).
The issue's acceptance bar is asserted: loop lag p99 < 50 ms and no stall over 250 ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

from tests.discord_support import real_bot
from tests.door_files import big_bmp, png_claiming, truncated_png

TICK_S = 0.005


class Ticker:
    """Records how late each 5 ms sleep wakes up."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.lags.append(max(0.0, time.perf_counter() - t0 - TICK_S))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict:
        assert self._task is not None
        self._task.cancel()
        ms = sorted(x * 1000 for x in self.lags)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return {"ticks": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(p99, 2),
                "max_ms": round(ms[-1], 2)}  # fmt: skip


async def test_loop_keeps_ticking_during_generation_and_llm_turn(tmp_path, monkeypatch, tiny_models_dir):
    async with real_bot(tmp_path, monkeypatch, tiny_models_dir, max_wall_s=60) as (fake, bot, services, agent):
        await _measure(fake, bot, services, agent, tmp_path)


async def _measure(fake, bot, services, agent, tmp_path) -> None:
    ticker = Ticker()
    agent_turns: list = []
    real_run = agent.run

    async def counted(turn):
        result = await real_run(turn)
        agent_turns.append(result.decisions)
        return result

    agent.run = counted
    # warm both models first so the measurement covers work, not one-off loading
    warm = await services.submit("generate", {"prompt": "warm up"}, user_id=1, channel_id=fake.channel_id)
    await services.wait(warm, 120)
    await agent.model.achat([{"role": "user", "content": "hi"}], max_tokens=4)
    ticker.start()
    t0 = time.perf_counter()
    job = await services.submit("generate", {"prompt": "a lighthouse", "steps": 24, "count": 2},
                                user_id=int(fake.alice["id"]), channel_id=fake.channel_id)  # fmt: skip
    mention = fake.message(fake.alice, f"<@{fake.bot_user['id']}> hi! what can you do?",
                           mentions=[fake.bot_user])  # fmt: skip
    await fake.dispatch("MESSAGE_CREATE", mention)
    bad = [("bomb.png", png_claiming(50_000, 50_000)), ("huge.bmp", big_bmp()), ("cut.png", truncated_png())]
    asks = []
    for name, data in bad:  # while the generation runs
        ask = fake.message(fake.bob, f"<@{fake.bot_user['id']}> what do you think of this?",
                           attachments=[fake.attachment(name, data)], mentions=[fake.bot_user])  # fmt: skip
        asks.append(ask["id"])
        await fake.dispatch("MESSAGE_CREATE", ask)
    final = await services.wait(job, 120)
    replied = lambda: [  # noqa: E731
        c
        for c in fake.find("POST", r"/channels/\d+/messages$")
        if str((c.body.get("message_reference") or {}).get("message_id")) == mention["id"]
    ]
    await fake.wait_for(replied, timeout=90, what="agent reply")
    answers = lambda: [  # noqa: E731
        c.body["content"] for c in fake.find("POST", r"/channels/\d+/messages$")
        if str((c.body.get("message_reference") or {}).get("message_id")) in asks
    ]  # fmt: skip
    await fake.wait_for(lambda: len(answers()) == 3 or None, timeout=60, what="answers to the bad files")
    elapsed = time.perf_counter() - t0
    stats = await ticker.stop()
    dog = bot.watchdog.stats()
    stats |= {"busy_s": round(elapsed, 2), "job_state": final.state, "llm_decisions": sum(agent_turns),
              "watchdog": dog}  # fmt: skip
    print("\nLOOP_LAG " + json.dumps(stats))
    (tmp_path / "loop_lag.json").write_text(json.dumps(stats))
    assert final.state == "done", final.error
    assert agent_turns and agent_turns[0] >= 1  # the LLM really ran
    assert stats["ticks"] >= 20  # the loop kept ticking throughout (expected ~busy_s / 5 ms)
    assert sorted(a.split()[1].rstrip(":") for a in answers()) == ["bomb.png", "cut.png", "huge.bmp"]
    assert stats["p99_ms"] < 50 and stats["max_ms"] < 250, (stats, [s.stack for s in bot.watchdog.stalls])
