"""/animate on the fronts: the Discord cog (through the fake Discord) and the terminal command."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.chat import TerminalChat
from bot.usecases.animate import parse_animate
from bot.usecases.errors import UserError
from engine.video import encode_mp4, metadata_tags, probe
from tests.discord_support import running_env
from tests.test_animate import CLIP
from tests.test_control_jobs import settings, svc  # noqa: F401
from tools.context import Attachment


def _png(color=(200, 40, 40), size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


class FakeAnimate:
    """An 'animate' handler that reports steps and writes a real 8-frame MP4 (no model)."""

    def __init__(self, store: Any, out: Path) -> None:
        self.store, self.out, self.payloads = store, out, []

    async def run(self, job: Any, ctx: Any) -> dict:
        self.payloads.append(dict(job.payload))
        for step in (1, 2, 3):
            ctx.progress(step, 3)
            await asyncio.sleep(0.03)
        frames = [Image.new("RGB", (32, 32), (i * 30, 80, 160)) for i in range(8)]
        path = self.out / f"{job.id}.mp4"
        path.write_bytes(
            encode_mp4(frames, 8, tags=metadata_tags(job.payload["prompt"], {"seed": job.payload["seed"]}))
        )
        gen = await self.store.history.add(user_id=job.user_id, guild_id=job.guild_id, prompt=job.payload["prompt"],
                                           seed=job.payload["seed"], images=[str(path)])  # fmt: skip
        return {"generation_id": gen, "images": [str(path)], "seeds": [job.payload["seed"]], "spoilers": [False],
                "prompt": job.payload["prompt"], "params": {"video": True, "frames": 8, "fps": 8, "width": 32,
                                                            "height": 32}}  # fmt: skip


async def _error(env: Any, payload: dict) -> str:
    await env.send("INTERACTION_CREATE", payload)
    tok = payload["token"]
    err = await env.fake.wait_for(
        lambda: env.fake.find("POST", rf"webhooks/\d+/{tok}$"), what="error followup"
    )
    return err[0].body["content"]


async def test_discord_animate_posts_an_mp4_and_refuses_bad_input(tmp_path, monkeypatch) -> None:
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        handler = FakeAnimate(env.services.store, tmp_path)
        env.services.runner.handlers["animate"] = handler.run
        junk = fake.attachment("notes.txt", b"not an image", "text/plain")
        assert "image: notes.txt was refused" in await _error(
            env, fake.slash("animate", prompt="waves", image=junk)
        )
        assert "frames must be between 2 and 48, got 100" in await _error(
            env, fake.slash("animate", prompt="waves", frames=100)
        )
        assert handler.payloads == []
        slash = fake.slash(
            "animate", prompt="waves on a beach", frames=8, seed=42, image=fake.attachment("a.png", _png())
        )
        await env.send("INTERACTION_CREATE", slash)
        done = await fake.wait_for(
            lambda: [c for c in fake.find("PATCH", rf"{slash['token']}/messages/@original") if c.files],
            what="mp4",
        )
        ((name, data),) = done[-1].files
        assert name.endswith(".mp4") and probe(data).frames == 8 and probe(data).params() == {"seed": 42}
        assert (
            "🎬 **waves on a beach**" in done[-1].body["content"]
            and "8 frames at 8 fps" in done[-1].body["content"]
        )
        (payload,) = handler.payloads
        assert payload["frames"] == 8 and payload["seed"] == 42 and payload["source_image"].endswith(".png")
        labels = [
            c.get("custom_id", "") for row in done[-1].body.get("components", []) for c in row["components"]
        ]
        assert labels and not any(
            x.startswith(("atelier:v:", "atelier:u:")) for x in labels
        )  # no image buttons


def test_parse_animate_options() -> None:
    assert parse_animate("--frames 12 a dog runs --seed=5") == ("a dog runs", {"frames": 12, "seed": 5})
    with pytest.raises(UserError, match="--fps needs a whole number"):
        parse_animate("--fps fast a dog")
    with pytest.raises(UserError, match="unknown option --size"):
        parse_animate("--size 64 a dog")


async def test_terminal_animate_from_text_and_from_an_attached_image(svc) -> None:  # noqa: F811
    chat = TerminalChat(svc, agent=None)  # type: ignore[arg-type]  # /animate needs no agent
    opts = f"--frames {CLIP['frames']} --seed 3"
    with pytest.raises(UserError, match="needs a prompt"):
        await chat.command(f"/animate {opts}")
    out = await chat.command(f"/animate {opts} a paper boat drifting")
    mp4 = out.splitlines()[0]
    assert mp4.endswith(".mp4") and probe(mp4).frames == CLIP["frames"] and "frames at" in out
    chat.pending = [Attachment("boat.png", _png((20, 90, 200), 64))]
    out = await chat.command(f"/animate {opts} the boat sails away")
    assert probe(out.splitlines()[0]).frames == CLIP["frames"] and chat.pending == []
    job = (await svc.jobs.user_jobs(chat.user_id, ("done",)))[-1]
    assert job.payload["source_image"].endswith(".png")


def test_the_poster_shrinks_a_clip_over_the_guild_limit_or_says_it_cannot() -> None:
    from bot.discord.render import UploadTooLarge, fit_upload

    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(10)]
    data = encode_mp4(frames, 8, tags=metadata_tags("static", {"seed": 9}))
    small, name = fit_upload(data, len(data) // 2, "12.mp4")
    assert name == "12.mp4" and len(small) <= len(data) // 2
    assert probe(small).frames == 10 and probe(small).params() == {"seed": 9}  # same clip, same metadata
    with pytest.raises(UploadTooLarge, match="over the upload limit"):
        fit_upload(data, 1500, "12.mp4")
