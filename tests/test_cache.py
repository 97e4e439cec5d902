"""The seed-aware result cache: a fixed-seed repeat returns the stored images, marked cached; nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.config_quality import Cache, Scoring
from engine.core import Engine
from engine.jobs.cache import request_key
from engine.jobs.handlers import Plan
from engine.jobs.result import JobResult
from engine.store.history import Scope

A, B = 11, 22
TINY = {"family": "sd15", "steps": 3, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64}


def _settings(tmp_path: Path, tiny_models_dir: Path, **cache) -> Settings:
    return Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, max_steps=60, preview_every_steps=2),
        queue=Queue(max_per_user=2, daily_quota=100, lease_s=30.0, batch_window_ms=0),
        cache=Cache(**cache),
        scoring=Scoring(enabled=False),
    )


@pytest.fixture
def start(tmp_path, tiny_models_dir, tiny_engines):
    """Factory: a started Engine with these cache settings and the 'tiny' preset."""
    return lambda **cache: tiny_engines(_settings(tmp_path, tiny_models_dir, **cache), TINY)


async def run(svc: Engine, payload: dict, user: int = A) -> JobResult:
    job = await svc.wait(await svc.submit("generate", payload, user_id=user), timeout_s=120)
    assert job.state == "done", job.error
    out = JobResult.of(job)
    assert out is not None
    return out


def _bytes(paths: list[str]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


async def test_a_fixed_seed_repeat_returns_the_stored_images_marked_cached(start):
    svc = await start()
    ask = {"prompt": "a lighthouse", "preset": "tiny", "seed": 77, "count": 2}
    first = await run(svc, ask)
    calls = svc.arbiter.snapshot()[0]["loads"]
    again = await run(svc, ask, user=B)
    assert first.params.get("cached") is None and again.params["cached"] is True
    assert again.params["cached_from"] == first.generation_id and again.generation_id != first.generation_id
    assert again.images == first.images and _bytes(again.images) == _bytes(first.images)
    assert again.seeds == first.seeds == [77, 78]
    assert svc.arbiter.snapshot()[0]["loads"] == calls  # nothing was rendered for the hit
    mine = await svc.store.history.get(again.generation_id, Scope(B))
    assert mine is not None and mine.params["cached"] is True  # the hit is in B's own history
    other = await run(svc, {**ask, "steps": 4})  # one parameter differs: a fresh render
    assert other.params.get("cached") is None and _bytes(other.images) != _bytes(first.images)


async def test_random_seeds_never_hit_even_when_the_drawn_seed_repeats(start, monkeypatch):
    svc = await start()
    monkeypatch.setattr("engine.jobs.submit.random.randint", lambda a, b: 4242)
    first = await run(svc, {"prompt": "a fox", "preset": "tiny"})
    second = await run(svc, {"prompt": "a fox", "preset": "tiny"})
    assert first.seeds == second.seeds == [4242]
    assert second.params.get("cached") is None and second.images != first.images
    fixed = await run(svc, {"prompt": "a fox", "preset": "tiny", "seed": 4242})  # the same request, seed given
    assert fixed.params["cached"] is True and fixed.images in (first.images, second.images)


async def test_an_expired_entry_is_not_used(start):
    svc = await start(ttl_s=0.001)
    ask = {"prompt": "a boat", "preset": "tiny", "seed": 5}
    first = await run(svc, ask)
    again = await run(svc, ask)
    assert again.params.get("cached") is None and again.images != first.images
    assert await svc.store.cache.size() == 1  # the expired entry was replaced by the fresh one


async def test_a_user_can_turn_the_cache_off(start):
    svc = await start()
    ask = {"prompt": "a cat", "preset": "tiny", "seed": 9}
    first = await run(svc, ask)
    await svc.store.settings.update("user", B, cache=False)
    mine = await run(svc, ask, user=B)
    assert mine.params.get("cached") is None and mine.images != first.images
    assert (await run(svc, ask)).params["cached"] is True  # A still has it on


async def test_the_size_limit_keeps_the_newest_entries(start):
    svc = await start(max_entries=2)
    for seed in (1, 2, 3):
        await run(svc, {"prompt": "a tree", "preset": "tiny", "seed": seed})
    assert await svc.store.cache.size() == 2
    assert (await run(svc, {"prompt": "a tree", "preset": "tiny", "seed": 1})).params.get("cached") is None
    assert (await run(svc, {"prompt": "a tree", "preset": "tiny", "seed": 3})).params["cached"] is True


def test_the_key_covers_parameters_seed_and_image_pixels():
    from PIL import Image

    preset = {"name": "tiny", "model": "m", "family": "sd15"}
    base = Plan(preset, "p", "", "", {"steps": 3, "seed": 1, "init_image": Image.new("RGB", (8, 8), "red")})
    same = Plan(dict(preset), "p", "", "", {"seed": 1, "steps": 3, "init_image": Image.new("RGB", (8, 8), "red")})
    assert request_key(base, None) == request_key(same, None)
    for other in (
        Plan(preset, "p", "", "", {**base.fields, "seed": 2}),
        Plan(preset, "p", "", "", {**base.fields, "init_image": Image.new("RGB", (8, 8), "blue")}),
        Plan({**preset, "model": "n"}, "p", "", "", base.fields),
        Plan(preset, "p", "", "", {**base.fields, "loras": [("x", 0.5)]}),
    ):
        assert request_key(other, None) != request_key(base, None)
    assert request_key(base, 4) != request_key(base, None)
