"""Tiny models on CPU for tests: a demo Engine, one 'generate' job run to its end, a loaded tiny edit model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.core import Engine
from engine.runtime.diffusion.edit import EditModel
from engine.store.jobs import Job


def demo_settings(tmp: Path, models: Path, **generation: Any) -> Settings:
    """CPU settings with the data folder under `tmp`, the tiny models, small images and a 2-job queue per user."""
    return Settings(
        paths=Paths(data_dir=str(tmp / "data"), demo_models=str(models)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, **generation),
        queue=Queue(max_per_user=2, daily_quota=100, lease_s=30.0),
    )


@contextlib.asynccontextmanager
async def demo_engine(settings: Settings) -> AsyncIterator[Engine]:
    """Engine.start(demo=True) with a fast poll, stopped on the way out."""
    svc = await Engine.start(settings, demo=True, poll_s=0.05)
    try:
        yield svc
    finally:
        await svc.stop()


async def run_generate(svc: Engine, payload: dict, user_id: int, guild_id: int, timeout_s: float) -> Job:
    """Submit a 'generate' job and wait for its end (done, failed or cancelled)."""
    return await svc.wait(await svc.submit("generate", payload, user_id=user_id, guild_id=guild_id), timeout_s)


def loaded_edit_model(path: Path, family: str, cfg: float) -> EditModel:
    """The tiny edit pipeline at `path` as a loaded EditModel on CPU: 3 steps at 64x64, no safety checker."""
    preset = {"name": f"tiny-{family}", "family": family, "model": str(path), "steps": 3, "cfg": cfg,
              "scheduler": "default", "width": 64, "height": 64}  # fmt: skip
    model = EditModel(preset, Settings(gpu=Gpu(device="cpu")), safety_checker=None)
    model.load("cpu")
    return model
