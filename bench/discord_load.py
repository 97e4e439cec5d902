"""First response under a crowd: N users hit the bot on a fake Discord within S seconds.

python -m bench.discord_load [--users 100] [--seconds 10] [--agent scripted|real] [--seed 7] [--drain-s 600]

Each user sends one /imagine, most send an @mention ("draw …" or a question) in their own channel, and
half click a button (variation, upscale, info, favourite) on a posted result, all at seeded random times
within --seconds. The bot runs on the real engine (tiny demo pipeline, in-process job runner, SQLite) over
tests/discord_fake.py. The agent is scripted by default (it routes "draw …" to a generate job without a
model, so the bench measures the bot and the engine, and fits 2 cores); --agent real uses the SmolLM2 agent.
The first response is timed at the fake's HTTP side, from the gateway dispatch to the interaction callback
(defer/reply) or, for a mention, the typing indicator (or a reply). It waits (bounded) for every job and
prints ONE JSON line: first response p50/p99, loop lag p99, interactions past the 3 s deadline, Discord
API errors, jobs submitted/delivered and duplicate deliveries. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import discord_load_support as ls
from bench import soak_support as ss

SUBJECTS = ["a red fox in the snow", "a lighthouse at dusk", "a blue robot reading", "a castle on a hill",
            "a cat astronaut", "a harbour at dawn", "a forest spirit", "a neon city street"]  # fmt: skip
QUESTIONS = ["what can you do?", "hi! how are you?", "which styles do you know?"]
CLICKS = {"click_variation": "atelier:v:{job}:1", "click_upscale": "atelier:u:{job}:1",
          "click_info": "atelier:i:{job}", "click_favorite": "atelier:f:{job}"}  # fmt: skip
TARGETS = {"first_response_p99_ms": 100, "loop_lag_p99_ms": 50, "failed_interactions": 0}


def plan(users: list[dict], seconds: float, rng: random.Random) -> list[tuple[float, str, dict]]:
    """Each user's events as (at_s, kind, user), sorted by time."""
    events = []
    for who in users:
        events.append((rng.uniform(0, seconds), "imagine", who))
        if rng.random() < 0.7:
            kind = "mention_draw" if rng.random() < 0.5 else "mention_chat"
            events.append((rng.uniform(0, seconds), kind, who))
        if rng.random() < 0.5:
            events.append((rng.uniform(seconds / 2, seconds), rng.choice(list(CLICKS)), who))
    return sorted(events, key=lambda e: e[0])


class Crowd:
    """Sends the planned events on time and remembers each one's kind."""

    def __init__(self, fake: ls.LoadFake, rng: random.Random) -> None:
        self.fake, self.rng = fake, rng
        self.kinds: dict[int, str] = {}

    def _result(self, kind: str, who: dict) -> tuple[dict, str, dict] | None:
        """A posted result with this button (the user's own if they have one) and its owner."""
        mine = [r for r in self.fake.results if r[2] == int(who["id"])]
        for job, mid, owner in reversed(mine or self.fake.results[-20:]):
            msg = self.fake.messages.get(mid)
            cid = CLICKS[kind].format(job=job)
            if msg is not None and cid in ss.button_ids(msg):
                clicker = next((u for u in self.fake.people if int(u["id"]) == owner), who)
                return msg, cid, clicker
        return None

    async def send(self, kind: str, who: dict) -> None:
        """Dispatch one event (a click with no result to click yet becomes an /imagine)."""
        fake = self.fake
        target = self._result(kind, who) if kind in CLICKS else None
        if kind in CLICKS and target is None:
            kind = "imagine"
        if kind == "imagine":
            payload, event = fake.slash("imagine", who, prompt=self.rng.choice(SUBJECTS)), "INTERACTION_CREATE"
        elif kind in CLICKS:
            msg, cid, clicker = target
            payload, event = fake.click(msg, cid, clicker), "INTERACTION_CREATE"
        else:
            text = f"draw {self.rng.choice(SUBJECTS)}" if kind == "mention_draw" else self.rng.choice(QUESTIONS)
            payload, event = fake.mention(who, text), "MESSAGE_CREATE"
        self.kinds[int(payload["id"])] = kind
        await fake.send(event, payload)

    async def run(self, events: list[tuple[float, str, dict]]) -> None:
        """Send every event at its time."""
        t0 = time.monotonic()
        for at, kind, who in events:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            await self.send(kind, who)


def load_settings(data: Path, models: Path) -> Any:
    """Local queue (in-process runner), tiny demo models on CPU, generous per-user limits."""
    from engine.config import Agent, Discord, Generation, Gpu, Metrics, Paths, Queue, Settings

    return Settings(
        paths=Paths(data_dir=str(data), demo_models=str(models)),
        gpu=Gpu(device="cpu"),
        generation=Generation(safety="off", max_side=512, max_pixels=256 * 256),
        queue=Queue(max_per_user=4, daily_quota=10_000, job_timeout_s=300.0),
        discord=Discord(progress_edit_interval_s=0.5),
        agent=Agent(max_tool_calls=2, max_wall_s=120),
        metrics=Metrics(port=0),
    )


async def _warm_up(services: Any, agent: Any, real_agent: bool, channel: int) -> None:
    """Load the painter (and the thinker) once, so the crowd measures work, not first loads."""
    job = await services.submit("generate", {"prompt": "warm up"}, user_id=1, channel_id=channel)
    await services.wait(job, 300)
    if real_agent:
        await agent.model.achat([{"role": "user", "content": "hi"}], max_tokens=4)


async def run_load(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start the app, bot and fake; send the crowd; drain; return the report."""
    from bot.app import App
    from bot.discord.bot import AtelierBot
    from engine.looplag import LoopWatchdog

    patch, fake = ss.Patch(), ls.LoadFake(args.users)
    counter = ss.LogCounter()
    logging.getLogger().addHandler(counter)
    await fake.start()
    fake.patch(patch)
    app = await App.start(load_settings(work / "data", Path(args.models)), demo=True)
    services = app.engine
    agent = app.agent if args.agent == "real" else ls.ScriptedLoadAgent(services)
    bot = AtelierBot(services, agent, guild_ready_timeout=0.05)
    bot_task = asyncio.create_task(bot.start("fake-token"))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        await _warm_up(services, agent, args.agent == "real", fake.channel_id)
        first_job = int((await services.jobs.db.fetchone("SELECT MAX(id) FROM jobs"))[0]) + 1
        dog, crowd = LoopWatchdog().start(), Crowd(fake, random.Random(args.seed))
        t0 = time.monotonic()
        await crowd.run(plan(fake.people, args.seconds, crowd.rng))
        traffic_s = round(time.monotonic() - t0, 2)
        deadline = time.monotonic() + args.drain_s
        while time.monotonic() < deadline and not ls.settled(await ss.job_rows(services, first_job), fake):
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # late duplicate posts would show up here
        dog.stop()
        rows = await ss.job_rows(services, first_job)
        lag = dog.stats()
        return {
            "users": args.users, "seconds": args.seconds, "seed": args.seed, "agent": args.agent,
            "events": len(crowd.kinds), "events_by_kind": dict(collections.Counter(crowd.kinds.values())),
            **ls.response_summary(fake, crowd.kinds),
            "loop_lag_p99_ms": lag["p99_ms"], "loop_lag_max_ms": lag["max_ms"], "loop_stalls": lag["stalls"],
            "discord_api_errors": len(fake.api_errors) + counter.counts["discord_error"],
            "api_error_samples": fake.api_errors[:5], **ls.delivery_summary(rows, fake),
            "traffic_s": traffic_s, "drain_s": round(time.monotonic() - t0 - traffic_s, 1),
            "rest_calls": len(fake.calls), "log_counts": dict(sorted(counter.counts.items())),
            "log_error_samples": counter.samples, "targets": TARGETS, "cpus": os.cpu_count(),
        }  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            await bot.close()
        await asyncio.gather(bot_task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await app.stop()
        await fake.stop()
        patch.undo()
        logging.getLogger().removeHandler(counter)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The bench's command line."""
    p = argparse.ArgumentParser(prog="python -m bench.discord_load", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0, help="window in which every user's events arrive")
    p.add_argument("--agent", choices=["scripted", "real"], default="scripted",
                   help="scripted: rules without a model (default); real: the SmolLM2 agent")  # fmt: skip
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drain-s", type=float, default=600.0, help="longest wait for the jobs after the crowd")
    p.add_argument("--models", default=str(ss.tiny_models_dir()), help="the tiny demo models' folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print one JSON line (logs go to a file in a temporary folder)."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="atelier-load-"))
    logging.basicConfig(level=logging.INFO, filename=str(work / "load.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    t0 = time.monotonic()
    try:
        report = asyncio.run(run_load(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
