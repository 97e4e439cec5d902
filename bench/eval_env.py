"""The evaluation's world: a scratch store with the user's six earlier images, a real LLM, the real agent."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bench.eval_cases import Case
from bot.agent import Agent
from bot.conversation import ChatLine, Turn
from engine.config import Agent as AgentSettings
from engine.config import Paths, Queue, Settings
from engine.runtime.llm import LlamaModel, parse_preset
from engine.runtime.llm.chunks import CHUNKS_PREFIX, resolve_chunks
from engine.runtime.models import NOT_RUNTIME, PKG_PREFIX, resolve_pkg
from engine.store import Store, open_store
from engine.store.jobs import Job, JobStore
from tools.context import Attachment, Services
from tools.orchestrator import Orchestrator

USER, GUILD, CHANNEL = 4242, 99, 7
HISTORY = [  # (prompt, seed, style): ids 1..6 in a fresh store
    ("blue robot in a meadow", 111, ""),
    ("red fox in the snow", 222, "watercolor"),
    ("lighthouse at night, stormy sea", 333, "cinematic"),
    ("a castle on a hill at dawn", 444, ""),
    ("portrait of an old sailor", 555, ""),
    ("a cat astronaut floating in space", 666, ""),
]
REPLIED = 3  # the generation a "replied" case replies to (the lighthouse)


def png(color: tuple[int, int, int] = (90, 120, 200), size: int = 48) -> bytes:
    """A small PNG (the "attached" photo)."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


async def _no_wait(job_id: int, timeout: float) -> Job:
    raise TimeoutError(f"job #{job_id} is not rendered in the evaluation")


@dataclass
class EvalEnv:
    """Everything a case needs: the agent and the ids of the seeded history."""

    agent: Agent
    store: Store
    replied_id: int
    photo: bytes

    def turn(self, case: Case) -> Turn:
        """The case as the fronts would hand it to the agent."""
        lines = [ChatLine("atelier" if m.role == "assistant" else "user", m.content, m.role == "assistant")
                 for m in case.history]  # fmt: skip
        return Turn(
            conversation=[*lines, ChatLine("user", case.text)], user_id=USER, guild_id=GUILD, channel_id=CHANNEL,
            attachments=[Attachment("photo.png", self.photo, "image/png")] if case.image == "attached" else [],
            replied_generation_id=self.replied_id if case.image == "replied" else None,
        )  # fmt: skip


async def seed_history(store: Store, settings: Settings) -> list[int]:
    """The user's earlier images, each with a real PNG file."""
    out = settings.path("outputs")
    ids = []
    for i, (prompt, seed, style) in enumerate(HISTORY):
        rel = f"eval/{i}.png"
        (out / "eval").mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(png((30 * i, 90, 200 - 20 * i)))
        ids.append(await store.history.add(user_id=USER, guild_id=GUILD, channel_id=CHANNEL, prompt=prompt,
                                           seed=seed, preset="sd15", style=style, images=[rel]))  # fmt: skip
    return ids


async def load_llm(store: Store, settings: Settings, name: str, threads: int) -> LlamaModel:
    """The named LLM preset loaded on the CPU (pkg: and chunks: references resolved)."""
    data = await store.presets.resolve("llm", name)
    raw = {k: v for k, v in data.items() if k not in NOT_RUNTIME}
    ref = str(raw["model"])
    if ref.startswith(PKG_PREFIX):
        raw["model"] = resolve_pkg(ref, name)
    elif ref.startswith(CHUNKS_PREFIX):
        raw["model"] = resolve_chunks(ref, settings.path("models"), name)
    raw["n_threads"] = threads
    model = LlamaModel.from_settings(parse_preset(raw), settings)
    model.load("cpu")
    return model


@asynccontextmanager
async def open_env(tmp: Path, model_name: str, *, threads: int, rules: bool) -> AsyncIterator[EvalEnv]:
    """A scratch store and the real agent on `model_name`; everything is closed on exit."""
    settings = Settings(
        paths=Paths(data_dir=str(tmp), models=str(Path.cwd() / "data" / "models")),
        agent=AgentSettings(max_tool_calls=4, max_wall_s=120.0),
        queue=Queue(daily_quota=100_000, max_per_user=100),
    )
    store = await open_store(settings)
    model = None
    try:
        ids = await seed_history(store, settings)
        model = await load_llm(store, settings, model_name, threads)
        jobs = JobStore(store.db, settings.queue)
        services = Services(store, jobs, settings, llm=model, vision=None, wait_for_job_hook=_no_wait,
                            llm_preset=model_name)  # fmt: skip
        agent = Agent(model, Orchestrator(services), settings, use_rules=rules)
        yield EvalEnv(agent, store, ids[REPLIED - 1], png())
    finally:
        if model is not None:
            model.close()
        await store.close()
