"""Compare grids: one prompt across presets, schedulers or seeds; one labelled grid image plus the single images."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.usecases.errors import UserError
from bot.usecases.library import preset_of
from engine.core import Engine
from engine.jobs.result import JobResult
from engine.runtime.diffusion.request import MAX_SEED

AXES = {"presets": "preset", "schedulers": "scheduler", "seeds": "seed"}
MAX_TILES = 6
LABEL_H = 18


@dataclass
class Tile:
    """One cell of the grid: its label, the job that drew it, and its image (or why it has none)."""

    label: str
    job_id: int
    image: str | None = None
    error: str | None = None


@dataclass
class Comparison:
    """A finished comparison: the grid file and every tile."""

    axis: str
    prompt: str
    tiles: list[Tile] = field(default_factory=list)
    grid: str | None = None

    def text(self) -> str:
        """A caption naming each tile (and each failure)."""
        parts = [f"{t.label}: job #{t.job_id}" + (f" failed: {t.error}" if t.error else "") for t in self.tiles]
        return f"**Compare {self.axis}** — {self.prompt}\n" + " · ".join(parts)


def parse_values(axis: str, raw: str) -> list[str]:
    """The comma-separated values of an axis (2 to MAX_TILES, distinct); UserError otherwise."""
    if axis not in AXES:
        raise UserError(f"compare what? choose one of: {', '.join(AXES)}")
    values = list(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
    if not 2 <= len(values) <= MAX_TILES:
        raise UserError(f"give 2 to {MAX_TILES} distinct {axis} separated by commas, got {len(values)}")
    if axis == "seeds":
        bad = [v for v in values if not v.isdigit() or int(v) > MAX_SEED]
        if bad:
            raise UserError(f"seeds must be whole numbers from 0 to {MAX_SEED}; not: {', '.join(bad)}")
    return values


async def check_quota(engine: Engine, user_id: int, n: int) -> None:
    """UserError when n more jobs would pass the user's daily quota."""
    quota = engine.settings.queue.daily_quota
    used = await engine.store.costs.jobs_today(user_id)
    if used + n > quota:
        raise UserError(
            f"a comparison of {n} images needs {n} jobs; you have {max(0, quota - used)} of your {quota} left today"
        )


async def submit_compare(
    engine: Engine, *, user_id: int, guild_id: int, prompt: str, axis: str, raw: str, seed: int | None = None,
    preset: str | None = None, channel_id: int = 0, roles: tuple[int, ...] = (),
) -> Comparison:  # fmt: skip
    """Validate and queue one 'generate' job per value (same prompt, same seed unless seeds are compared)."""
    if not prompt.strip():
        raise UserError("the prompt is empty")
    values = parse_values(axis, raw)
    if preset and axis == "presets":
        raise UserError("presets are what is compared; leave preset out")
    if preset:
        preset = (await preset_of(engine, preset, user_id, guild_id))["name"]
    if axis == "presets":
        values = [(await preset_of(engine, v, user_id, guild_id))["name"] for v in values]
    await check_quota(engine, user_id, len(values))
    seed = seed if seed is not None else random.randint(0, MAX_SEED - 4)
    out = Comparison(axis, prompt.strip())
    for value in values:
        payload: dict[str, object] = {"prompt": prompt.strip(), "seed": seed, "count": 1}
        payload |= {"preset": preset} if preset else {}
        payload[AXES[axis]] = int(value) if axis == "seeds" else value
        job_id = await engine.submit(
            "generate", payload, user_id=user_id, guild_id=guild_id, channel_id=channel_id, roles=roles
        )
        out.tiles.append(Tile(value, job_id))
    return out


async def finish_compare(engine: Engine, cmp: Comparison, timeout_s: float = 600.0) -> Comparison:
    """Wait for every tile's job, then write the labelled grid next to the first image."""
    for t in cmp.tiles:
        job = await engine.wait(t.job_id, timeout_s)
        res = JobResult.of(job)
        if res is not None and res.images:
            t.image = res.images[0]
        else:
            t.error = job.error or job.state
    drawn = [t for t in cmp.tiles if t.image]
    if drawn:
        first = Path(str(drawn[0].image))
        path = first.with_name(f"{cmp.tiles[0].job_id}-compare-{cmp.axis}.png")
        await asyncio.to_thread(write_grid, cmp.tiles, path)
        cmp.grid = str(path)
    return cmp


def grid_image(tiles: list[Tile]) -> Image.Image:
    """Tiles side by side (up to 3 per row), each labelled underneath; a failed tile is grey with its label."""
    images = [Image.open(t.image).convert("RGB") if t.image else None for t in tiles]
    w = max(im.width for im in images if im is not None)
    h = max(im.height for im in images if im is not None)
    cols = min(3, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    grid = Image.new("RGB", (cols * w, rows * (h + LABEL_H)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (t, im) in enumerate(zip(tiles, images, strict=True)):
        x, y = (i % cols) * w, (i // cols) * (h + LABEL_H)
        grid.paste(im.resize((w, h)) if im is not None else Image.new("RGB", (w, h), "grey"), (x, y))
        label = t.label if im is not None else f"{t.label} (failed)"
        draw.text((x + 3, y + h + 3), label[:40], fill="black", font=font)
    return grid


def write_grid(tiles: list[Tile], path: Path) -> None:
    """Save the grid PNG (blocking)."""
    grid_image(tiles).save(path, format="PNG")
