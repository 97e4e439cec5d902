"""Shared helpers for the tools/agent tests: a real temp store with two users' history and a fake job waiter."""

from __future__ import annotations

import asyncio
import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from engine.config import Agent, Generation, Llm, Paths, Queue, Settings
from engine.store import Store
from engine.store.jobs import Job, JobStore
from tools.context import Services, ToolContext
from tools.registry import Registry
from tools.whitelist import WHITELIST

ALICE, BOB, GUILD, CHANNEL = 1001, 2002, 77, 5
ALICE_PROMPTS = [
    ("blue robot in a meadow", 111, "sd15", ""),
    ("red fox in the snow", 222, "sd15", "watercolor"),
    ("lighthouse at night, stormy sea", 333, "sdxl", "cinematic"),
]
BOB_PROMPTS = [
    ("blue robot secret project", 999, "sd15", ""),
    ("bob's private castle", 888, "sdxl", ""),
]
CHOICES = {"style": ["watercolor", "ink-sketch"], "preset": ["sd15", "sdxl"]}  # the tools' style and preset choices


def write_png(path: Path, color: tuple[int, int, int] = (200, 40, 40), size: int = 32) -> Path:
    """A small solid-colour PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path, format="PNG")
    return path


def png_bytes(color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (40, 20)) -> bytes:
    """A small solid-colour PNG's bytes, as an upload carries them."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Env:
    """A store, job store, settings and ids of the seeded generations."""

    store: Store
    jobs: JobStore
    settings: Settings
    services: Services
    alice_ids: list[int] = field(default_factory=list)
    bob_ids: list[int] = field(default_factory=list)

    def ctx(self, user_id: int = ALICE, **kw) -> ToolContext:
        """A tool context for a user in the test guild."""
        kw.setdefault("guild_id", GUILD)
        kw.setdefault("channel_id", CHANNEL)
        return ToolContext(services=self.services, user_id=user_id, **kw)

    async def owner(self, gen_id: int) -> int:
        """The user_id of a generation row, read straight from SQL."""
        row = await self.store.db.fetchone("SELECT user_id FROM generations WHERE id = ?", (gen_id,))
        return int(row[0])


def make_settings(
    tmp: Path, *, max_tool_calls: int = 4, max_wall_s: float = 60.0, quota: int = 200
) -> Settings:
    """Settings rooted in a temp dir with small agent limits."""
    return Settings(
        paths=Paths(data_dir=str(tmp)),
        generation=Generation(default_preset="sd15"),  # these tests check sd15 rules; the shipped default is sdxl
        llm=Llm(preset="smollm2-135m"),  # the text-only test model (the shipped default sees images)
        agent=Agent(max_tool_calls=max_tool_calls, max_wall_s=max_wall_s),
        queue=Queue(daily_quota=quota),
    )


async def seed_env(store: Store, settings: Settings, **services_kw) -> Env:
    """Two users' history in the same guild, each with a real PNG file under outputs/."""
    jobs = JobStore(store.db, settings.queue)
    env = Env(store, jobs, settings, Services(store, jobs, settings, **services_kw))
    out = settings.path("outputs")
    owners = (
        (ALICE, "alice", ALICE_PROMPTS, env.alice_ids, {"aspect": "16:9", "steps": 20}),
        (BOB, "bob", BOB_PROMPTS, env.bob_ids, None),
    )
    for user, folder, prompts, ids, params in owners:
        for i, (prompt, seed, preset, style) in enumerate(prompts):
            rel = f"{folder}/{i}.png"
            write_png(out / rel, (40, 40, 200 - i * 40) if user == ALICE else (10, 200, 10))
            ids.append(
                await store.history.add(
                    user_id=user,
                    guild_id=GUILD,
                    channel_id=CHANNEL,
                    prompt=prompt,
                    seed=seed,
                    preset=preset,
                    style=style,
                    images=[rel],
                    params=params,
                )
            )
    return env


def spied_registry(executed: list[str]) -> Registry:
    """The real whitelist, each tool wrapped to log its name when (and only when) its body runs."""

    def spy(func):
        @functools.wraps(func)
        async def wrapper(ctx, **kw):
            executed.append(func.__name__)
            return await func(ctx, **kw)

        return wrapper

    return Registry([spy(f) for f in WHITELIST])


class FakeJobWaiter:
    """wait_for_job stand-in: 'finishes' a queued job by writing a history row and an image, like the runner."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.waited: list[int] = []

    async def __call__(self, job_id: int, timeout: float) -> Job:
        self.waited.append(job_id)
        jobs, store = self.env.jobs, self.env.store
        job = await jobs.claim("fake-worker")
        assert job is not None and job.id == job_id, f"expected to run job {job_id}, got {job}"
        rel = f"jobs/{job_id}.png"
        write_png(self.env.settings.path("outputs") / rel, (120, 120, 20))
        gen_id = await store.history.add(
            user_id=job.user_id,
            guild_id=job.guild_id,
            prompt=job.payload["prompt"],
            seed=job.payload["seed"],
            images=[rel],
            parent_id=job.payload.get("source_generation_id"),
        )
        result = {"generation_id": gen_id, "images": [rel], "seeds": [job.payload["seed"]], "spoilers": [False]}
        await jobs.finish(job_id, result, "fake-worker")  # the one JobResult shape (engine.jobs.result)
        await asyncio.sleep(0)
        done = await jobs.get(job_id)
        assert done is not None
        return done
