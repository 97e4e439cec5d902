"""Helpers of the gallery tests: settings, a started engine, real PNGs and seeded generations."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from engine.config import Gpu, Paths, Settings, Web
from engine.core import Engine

OWNER, OTHER, GUILD = 1001, 2002, 77


def gallery_settings(tmp_path: Path, public_url: str = "http://testserver") -> Settings:
    """CPU settings in tmp_path with the given public URL."""
    return Settings(paths=Paths(data_dir=str(tmp_path / "data")), gpu=Gpu(device="cpu"),
                    web=Web(public_url=public_url))  # fmt: skip


def write_png(path: Path, i: int, side: int = 96) -> str:
    """A real small PNG whose colour depends on i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (side, side), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(path, format="PNG")
    return str(path)


async def add_generation(
    engine: Engine, i: int, *, user_id: int = OWNER, prompt: str | None = None, guild_id: int = 0,
    parent_id: int | None = None, preset: str = "sdxl", style: str = "", images: list[str] | None = None,
    created_at: float | None = None, params: dict | None = None,
) -> int:  # fmt: skip
    """One generation with one real PNG under outputs/ (unless images is given)."""
    if images is None:
        images = [write_png(engine.settings.path("outputs") / "2026-12-01" / f"seed-{user_id}-{i}.png", i)]
    return await engine.store.history.add(
        user_id=user_id, prompt=prompt or f"picture number {i} of a lighthouse", seed=1000 + i,
        guild_id=guild_id, params={"seeds": [1000 + i], "spoilers": [False], **(params or {})},
        model="tiny", preset=preset, style=style, images=images, parent_id=parent_id, created_at=created_at,
    )  # fmt: skip


def login_token(url: str) -> str:
    """The token of a login link."""
    m = re.search(r"/login/([A-Za-z0-9_-]+)$", url)
    assert m, url
    return m.group(1)


def card_ids(html: str) -> list[int]:
    """Generation ids of the grid cards in a page or fragment, in order."""
    return [int(x) for x in re.findall(r'class="card[^"]*" href="/gallery/g/(\d+)"', html)]


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def next_url(html: str) -> str | None:
    """The infinite-scroll marker's next-page URL, or None."""
    m = re.search(r'id="more" data-next="([^"]+)"', html)
    return m.group(1).replace("&amp;", "&") if m else None
