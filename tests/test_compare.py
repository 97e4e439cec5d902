"""Compare grids: one prompt across seeds, presets or schedulers → one labelled grid plus each single image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot import chat_quality
from bot.usecases import compare
from bot.usecases.errors import UserError
from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.config_quality import Scoring
from engine.core import Engine

A = 11
TINY = {"family": "sd15", "steps": 2, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64}


@pytest.fixture
async def svc(tmp_path, tiny_models_dir, tiny_sd_path, tiny_safety_path, tiny_engines):
    settings = Settings(
        paths=Paths(data_dir=str(tmp_path / "data"), demo_models=str(tiny_models_dir)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=256 * 256, max_steps=60, preview_every_steps=2),
        queue=Queue(batch_window_ms=0, daily_quota=4, max_per_user=4),
        scoring=Scoring(enabled=False),
    )
    engine = await tiny_engines(settings, TINY)
    hot = {**TINY, "cfg": 9.0, "model": str(tiny_sd_path), "safety_checker": str(tiny_safety_path)}
    await engine.store.presets.save("image", "tiny-hot", hot)
    return engine


def _label_ink(grid: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Dark pixels in a tile's label strip (text drawn in black on white)."""
    return int((np.asarray(grid.crop(box).convert("L")) < 128).sum())


async def test_seeds_give_one_labelled_grid_and_the_single_images(svc):
    cmp = await compare.submit_compare(svc, user_id=A, guild_id=0, prompt="a red fox", axis="seeds", raw="7, 8,9",
                                       preset="tiny")  # fmt: skip
    await compare.finish_compare(svc, cmp)
    assert [t.label for t in cmp.tiles] == ["7", "8", "9"] and all(t.image for t in cmp.tiles)
    assert cmp.grid is not None and Path(cmp.grid).is_file()
    grid = Image.open(cmp.grid)
    assert grid.size == (3 * 64, 64 + compare.LABEL_H)
    for i, t in enumerate(cmp.tiles):
        tile = np.asarray(grid.crop((i * 64, 0, i * 64 + 64, 64)).convert("RGB"))
        assert np.array_equal(tile, np.asarray(Image.open(t.image).convert("RGB")))
        assert _label_ink(grid, (i * 64, 64, i * 64 + 64, 64 + compare.LABEL_H)) > 0  # each tile is labelled
    singles = [np.asarray(Image.open(t.image)) for t in cmp.tiles]
    assert not np.array_equal(singles[0], singles[1])  # different seeds, different images
    assert "Compare seeds" in cmp.text() and "9: job #" in cmp.text()


async def test_presets_share_one_seed_and_a_failed_tile_is_marked(svc):
    cmp = await compare.submit_compare(svc, user_id=A, guild_id=0, prompt="a boat", axis="presets", raw="tiny,tiny-hot")
    await compare.finish_compare(svc, cmp)
    jobs = [await svc.jobs.require(t.job_id) for t in cmp.tiles]
    assert [j.payload["preset"] for j in jobs] == ["tiny", "tiny-hot"]
    assert jobs[0].payload["seed"] == jobs[1].payload["seed"]
    assert Image.open(cmp.grid).size == (2 * 64, 64 + compare.LABEL_H)
    bad = await compare.submit_compare(svc, user_id=22, guild_id=0, prompt="a boat", axis="schedulers",
                                       raw="euler,nope", preset="tiny")  # fmt: skip
    await compare.finish_compare(svc, bad)
    assert bad.tiles[0].image and bad.tiles[1].error and "nope" in bad.tiles[1].error
    assert "nope: job #" in bad.text() and "failed" in bad.text()


async def test_a_comparison_past_the_daily_quota_is_refused_before_anything_is_queued(svc):
    with pytest.raises(UserError, match=r"needs 5 jobs; you have 4 of your 4 left today"):
        await compare.submit_compare(svc, user_id=A, guild_id=0, prompt="x", axis="seeds", raw="1,2,3,4,5")
    assert (await svc.jobs.counts())["queued"] == 0


@pytest.mark.parametrize(
    ("axis", "raw", "message"),
    [
        ("seeds", "1", "give 2 to 6 distinct seeds"),
        ("seeds", "1,x", "seeds must be whole numbers"),
        ("models", "a,b", "compare what?"),
        ("seeds", "1,2,3,4,5,6,7", "give 2 to 6"),
    ],
)
def test_bad_values_get_a_specific_error(axis, raw, message):
    with pytest.raises(UserError, match=message):
        compare.parse_values(axis, raw)


async def test_an_unknown_preset_is_refused_by_name(svc):
    with pytest.raises(UserError, match="nosuch"):
        await compare.submit_compare(svc, user_id=A, guild_id=0, prompt="x", axis="presets", raw="tiny,nosuch")


@dataclass
class _Chat:
    engine: Engine
    user_id: int = A


async def test_the_terminal_compare_command(svc):
    text = await chat_quality.run(_Chat(svc), "compare", '"a small house" --seeds 3,4 --seed 1 --preset tiny')
    assert "Compare seeds" in text and "grid: " in text
    grid = text.split("grid: ")[1].splitlines()[0]
    assert Image.open(grid).size == (2 * 64, 64 + compare.LABEL_H)
    with pytest.raises(UserError, match="say what to compare"):
        chat_quality.parse_compare("a house")
