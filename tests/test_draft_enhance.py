"""Draft → Enhance: draft:true / the user setting pick the draft preset; Enhance re-renders one at full quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.chat_commands import parse_imagine
from bot.usecases import account
from bot.usecases.creation import enhance_payload, scaled
from bot.usecases.errors import UserError
from engine.core import Engine
from tests.demo_support import demo_engine, demo_settings, run_generate
from tests.discord_support import custom_ids, posted_ids, running_env

A, GUILD = 11, 500


@pytest.fixture
async def demo(tmp_path: Path, tiny_models_dir: Path, tiny_sd_path, tiny_safety_path):
    async with demo_engine(demo_settings(tmp_path, tiny_models_dir, enhance_strength=0.5)) as svc:
        yield svc


async def run(svc: Engine, payload: dict):
    return await run_generate(svc, payload, A, GUILD, timeout_s=120)


async def test_draft_flag_and_setting_pick_the_draft_preset_and_enhance_keeps_prompt_and_seed(demo):
    payload = await account.imagine_payload(
        demo, user_id=A, guild_id=GUILD, prompt="a red fox", seed=9, draft=True
    )
    draft = await run(demo, payload)
    assert draft.state == "done", draft.error
    r = draft.result
    assert (r["preset"], r["params"]["draft"], r["params"]["steps"], r["params"]["cfg"]) == (
        "demo-draft",
        True,
        1,
        0.0,
    )
    full = await run(demo, {"prompt": "a red fox", "seed": 9})
    assert full.result["preset"] == "demo" and "draft" not in full.result["params"]
    await account.settings_update(demo, A, GUILD, False, draft=True)  # the saved setting: drafts by default
    saved = await run(demo, {"prompt": "a red fox", "seed": 9})
    assert saved.result["preset"] == "demo-draft"
    assert np.array_equal(
        np.asarray(Image.open(saved.result["images"][0])), np.asarray(Image.open(r["images"][0]))
    )
    enhanced = await run(demo, await enhance_payload(demo, draft, 0, A, GUILD))
    assert enhanced.state == "done", enhanced.error
    e = enhanced.result
    assert (e["preset"], e["seeds"], e["prompt"], e["parent_id"]) == (
        "demo",
        [9],
        "a red fox",
        r["generation_id"],
    )
    assert (e["params"]["mode"], e["params"]["strength"], e["params"]["steps"]) == ("img2img", 0.5, 4)
    assert "draft" not in e["params"] and Image.open(e["images"][0]).size == (64, 64)
    with pytest.raises(UserError, match="is not a draft"):
        await enhance_payload(demo, full, 0, A, GUILD)
    with pytest.raises(UserError, match="there is no image 3"):
        await enhance_payload(demo, draft, 2, A, GUILD)


def test_enhance_size_follows_the_full_preset_area_and_terminal_parses_draft():
    assert scaled((512, 512), 1024 * 1024) == (1024, 1024)
    assert scaled((768, 512), 1024 * 1024) == (1248, 832)
    assert parse_imagine("a fox --draft").draft and parse_imagine("a fox --draft").prompt == "a fox"
    assert not parse_imagine("a fox").draft


async def test_discord_draft_result_has_enhance_buttons_and_a_click_queues_the_full_render(
    tmp_path, monkeypatch
):
    async with running_env(tmp_path, monkeypatch) as env:
        fake, plain = env.fake, env.handlers.run

        async def marking(job, ctx):  # the fast handler, with the params a real draft records
            out = await plain(job, ctx)
            draft = {"draft": True} if job.payload.get("draft") else {}
            return out | {
                "params": {"user_prompt": job.payload["prompt"], "width": 512, "height": 512, **draft}
            }

        env.services.runner.handlers["generate"] = marking
        payload = fake.slash("imagine", prompt="a red fox", count=2, seed=42, draft=True)
        await env.send("INTERACTION_CREATE", payload)
        tok = payload["token"]
        await fake.wait_for(
            lambda: fake.messages.get(fake.originals.get(tok, -1), {}).get("components"), what="draft"
        )
        msg = fake.messages[fake.originals[tok]]
        assert {"atelier:e:1:1", "atelier:e:1:2"} <= set(custom_ids(msg["components"]))
        assert env.handlers.runs[0][1]["draft"] is True
        click = fake.click(msg, "atelier:e:1:2", who=fake.bob)
        await env.send("INTERACTION_CREATE", click)
        await fake.wait_for(lambda: len(env.handlers.runs) > 1 or None, what="enhance job ran")
        kind, enhance = env.handlers.runs[1]
        source = await env.services.jobs.require(1)
        assert kind == "generate" and enhance["seed"] == 43  # image 2 of a seed-42 batch
        assert (enhance["source_generation_id"], enhance["source_index"]) == (
            source.result["generation_id"],
            1,
        )
        assert (enhance["prompt"], enhance["strength"], enhance["draft"], enhance["count"]) == (
            "a red fox",
            0.55,
            False,
            1,
        )
        assert (enhance["preset"], enhance["width"], enhance["height"]) == ("sdxl", 1024, 1024)
        ids = await posted_ids(fake, click["token"], "enhance posted")
        assert not [i for i in ids if i.startswith("atelier:e:")]  # not a draft
        plain_job = fake.slash("imagine", prompt="a cat")
        await env.send("INTERACTION_CREATE", plain_job)
        ptok = plain_job["token"]
        await fake.wait_for(
            lambda: fake.messages.get(fake.originals.get(ptok, -1), {}).get("components"), what="plain"
        )
        assert not [
            i for i in custom_ids(fake.messages[fake.originals[ptok]]["components"]) if i.startswith("atelier:e:")
        ]
