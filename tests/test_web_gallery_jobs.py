"""The gallery with real jobs: a tiny SD pipeline renders, the runner records, thumbnails follow in the background."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bot.usecases import gallery as uc
from bot.web.app import create_app
from engine.config import Gpu, Paths, Settings, Web
from engine.core import Engine
from engine.jobs.result import JobResult
from tests.gallery_support import card_ids, login_token

TINY = {"family": "sd15", "steps": 3, "cfg": 5.0, "scheduler": "euler", "width": 64, "height": 64}
USER = 4242


async def test_a_finished_job_is_in_the_gallery_with_a_thumbnail_made_in_the_background(
    tmp_path: Path, tiny_sd_path: Path, tiny_safety_path: Path
):
    settings = Settings(paths=Paths(data_dir=str(tmp_path / "data")), gpu=Gpu(device="cpu"),
                        web=Web(public_url="http://testserver"))  # fmt: skip
    engine = await Engine.start(settings, poll_s=0.05)
    try:
        preset = {**TINY, "model": str(tiny_sd_path), "safety_checker": str(tiny_safety_path)}
        await engine.store.presets.save("image", "tiny", preset)
        app = create_app(engine, None, settings)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as c:
            await c.get(f"/login/{login_token(await uc.login_link(engine, USER))}")
            assert (
                card_ids((await c.get("/gallery")).text) == []
            )  # nothing yet; the app's thumbnailer already listens to the runner
            job_id = await engine.submit("generate", {"prompt": "a tiny red boat", "preset": "tiny", "count": 2},
                                         user_id=USER)  # fmt: skip
            result = JobResult.of(await engine.wait(job_id, 300))
            assert result is not None and len(result.images) == 2
            gen = result.generation_id
            for _ in range(200):  # made by the runner subscription, before anyone asks for them
                if len(await engine.store.web.thumbnails([gen])) == 2:
                    break
                await asyncio.sleep(0.05)
            thumbs = await engine.store.web.thumbnails([gen])
            assert sorted(thumbs) == [(gen, 0), (gen, 1)]
            assert all(Path(p).parent == Path(result.images[0]).parent for p in thumbs.values())
            grid = await c.get("/gallery")
            assert card_ids(grid.text) == [gen] and "a tiny red boat" in grid.text
            r = await c.get(f"/gallery/thumb/{gen}/1")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            page = (await c.get(f"/gallery/g/{gen}")).text
            assert f"seed:{result.seeds[0]}" in page and "preset:tiny" in page
    finally:
        await engine.stop()
