"""Fixtures for the Discord front tests: a fake Discord, real store/jobs/runner with fast fake handlers."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bot.discord.bot import AtelierBot
from engine.config import Discord, Paths, Settings
from engine.core import Engine
from engine.jobs.runner import JobRunner
from engine.jobs.submit import JobSubmitter
from engine.runtime.arbiter import Arbiter
from engine.store import Store
from engine.store.jobs import JobStore
from tests.discord_fake import FakeDiscord


class FastHandlers:
    """'generate'/'variation'/'upscale' handlers that report progress with previews and write tiny PNGs."""

    def __init__(self, store: Store, out: Path, steps: int = 6, step_s: float = 0.03):
        self.store, self.out, self.steps, self.step_s = store, out, steps, step_s
        self.runs: list[tuple[str, dict]] = []
        self.size = (64, 64)

    def map(self) -> dict:
        return {"generate": self.run, "variation": self.run, "upscale": self.run}

    async def run(self, job: Any, ctx: Any) -> dict:
        self.runs.append((job.kind, dict(job.payload)))
        for step in range(1, self.steps + 1):
            ctx.raise_if_cancelled()
            ctx.progress(step, self.steps, Image.new("RGB", (8, 8), (step * 40 % 255, 0, 0)))
            await asyncio.sleep(self.step_s)
        count = int(job.payload.get("count", 1))
        seed = int(job.payload.get("seed", 1000 + job.id))
        paths = []
        for i in range(count):
            p = self.out / f"job{job.id}-{i}.png"
            Image.new("RGB", self.size, (i * 60, 100, 200)).save(p)
            paths.append(str(p))
        prompt = job.payload.get("prompt", "derived")
        gen = await self.store.history.add(user_id=job.user_id, guild_id=job.guild_id, prompt=prompt,
                                           seed=seed, images=paths)  # fmt: skip
        seeds = [seed + i for i in range(count)]
        return {"generation_id": gen, "images": paths, "seeds": seeds, "spoilers": [False] * count,
                "prompt": prompt}  # fmt: skip


@dataclass
class ScriptedAgent:
    """Agent double: returns scripted results (or calls scripted functions) and records the turns."""

    results: list[Any] = field(default_factory=list)
    delay_s: float = 0.0
    turns: list[Any] = field(default_factory=list)

    async def run(self, turn: Any) -> Any:
        self.turns.append(turn)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        item = self.results.pop(0)
        return await item(turn) if callable(item) else item


@dataclass
class Env:
    fake: FakeDiscord
    bot: AtelierBot
    services: Engine
    agent: ScriptedAgent
    handlers: FastHandlers
    tmp: Path

    async def send(self, event: str, payload: dict) -> None:
        await self.fake.dispatch(event, payload)


def make_settings(tmp: Path, **discord: Any) -> Settings:
    d = {"progress_edit_interval_s": 0.05, **discord}
    return Settings(paths=Paths(data_dir=str(tmp)), discord=Discord(**d))


@contextlib.asynccontextmanager
async def running_env(tmp: Path, monkeypatch: Any, *, settings: Settings | None = None, agent: Any = None,
                      start_runner: bool = True, db_name: str = "atelier.db", fake: FakeDiscord | None = None):  # fmt: skip
    """A started fake Discord, services (real SQLite + JobRunner, fast handlers) and a connected bot."""
    own_fake = fake is None
    fake = fake or FakeDiscord()
    if own_fake:
        await fake.start()
    fake.patch(monkeypatch)
    settings = settings or make_settings(tmp)
    store = await Store.open(tmp / db_name)
    jobs = JobStore(store.db, settings.queue)
    handlers = FastHandlers(store, tmp)
    runner = JobRunner(
        jobs, None, handlers.map(), settings, "test-worker", poll_s=0.05, progress_interval_s=0.0
    )
    submitter = JobSubmitter(jobs, store, settings, runner.wake)
    arbiter = Arbiter(settings.gpu)  # never started: nothing loads, /settings reads its (empty) footprints
    services = Engine(settings, store, arbiter, jobs, None, None, runner, submitter)  # type: ignore[arg-type]
    agent = agent or ScriptedAgent()
    bot = AtelierBot(services, agent, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start("fake-token"))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 15)
        if start_runner:
            await runner.start()
        yield Env(fake, bot, services, agent, handlers, tmp)
    finally:
        await runner.stop()
        await bot.poster.drain()
        await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await store.close()
        if own_fake:
            await fake.stop()


@contextlib.asynccontextmanager
async def real_bot(tmp: Path, monkeypatch: Any, demo_models: Path, *, max_wall_s: float = 90):
    """A fake Discord and the bot on REAL services (tiny pipeline, runner) with the real SmolLM2 agent."""
    from bot.app import App
    from engine.config import Agent

    settings = Settings(
        paths=Paths(data_dir=str(tmp), demo_models=str(demo_models)),
        discord=Discord(progress_edit_interval_s=0.2),
        agent=Agent(max_tool_calls=2, max_wall_s=max_wall_s),
    )
    fake = FakeDiscord()
    await fake.start()
    fake.patch(monkeypatch)
    app = await App.start(settings, demo=True)
    bot = AtelierBot(app.engine, app.agent, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start("fake-token"))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 15)
        yield fake, bot, app.engine, app.agent
    finally:
        await bot.close()
        await asyncio.gather(task, return_exceptions=True)
        await app.stop()
        await fake.stop()


def custom_ids(components: list) -> list[str]:
    """The custom ids of a message's components, row by row."""
    return [c["custom_id"] for row in components for c in row.get("components", [])]


async def posted_ids(fake: FakeDiscord, token: str, what: str) -> list[str]:
    """The custom ids of an interaction's original message once a PATCH gives it components (the latest)."""
    final = await fake.wait_for(
        lambda: [c for c in fake.find("PATCH", rf"{token}/messages/@original") if c.body.get("components")],
        what=what,
    )
    return custom_ids(final[-1].body["components"])
