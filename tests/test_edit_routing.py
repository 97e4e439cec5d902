"""Routing of "reply + make it night": the rules ask generate for an edit; the tool edits or falls back to img2img."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.plan import EDIT_STRENGTH, instruction_edit, prefill
from bot.understand import read
from engine.config import Generation, Paths, Settings
from tests.agent_support import seed_env
from tools.context import Attachment
from tools.editing import FALLBACK_NOTE
from tools.offer import offer_for
from tools.orchestrator import Orchestrator
from tools.prompts import shipped_prompts

RULES = shipped_prompts().router
GENERATE_PARAMS = ("prompt", "strength", "source_generation_id", "edit", "control", "reference", "outpaint")


def facts(text: str, image: bool = True):
    return read(text, rules=RULES, has_image=image, styles=[], presets=[])


@pytest.mark.parametrize(
    "text", ["make it night", "remove the hat", "make it darker", "same but with a red scarf"]
)
def test_an_instruction_on_a_replied_image_is_prefilled_as_an_edit(text):
    args = prefill("generate", facts(text), GENERATE_PARAMS, 42)
    assert args["edit"] is True and args["source_generation_id"] == 42 and args["strength"] == EDIT_STRENGTH


@pytest.mark.parametrize("text", ["again", "another one", "2 more", "variations", "reroll", "upscale it"])
def test_a_redraw_on_a_replied_image_is_not_an_edit(text):
    assert not instruction_edit(facts(text))
    assert "edit" not in prefill("generate", facts(text), GENERATE_PARAMS, 42)


def test_edit_is_offered_only_with_an_image():
    assert "edit" not in offer_for(("generate",), has_image=False, past=False).params(
        "generate", GENERATE_PARAMS
    )
    assert "edit" in offer_for(("generate",), has_image=True, past=False).params("generate", GENERATE_PARAMS)
    assert not prefill("generate", facts("make it night", image=False), GENERATE_PARAMS, None).get("edit")


def _settings(tmp, edit_preset: str = "") -> Settings:
    return Settings(
        paths=Paths(data_dir=str(tmp)), generation=Generation(default_preset="sd15", edit_preset=edit_preset)
    )


def png(color=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


async def test_without_an_edit_preset_the_tool_does_img2img_and_says_so(open_store, tmp_path):
    env = await seed_env(await open_store(), _settings(tmp_path))
    src = env.alice_ids[2]
    call = await Orchestrator(env.services).execute(
        env.ctx(replied_generation_id=src),
        {"tool": "generate", "args": {"prompt": "make it night", "edit": True}},
    )
    assert call.ok, call.result
    assert call.result["notes"] == [FALLBACK_NOTE] and call.result["mode"] == "img2img"
    job = await env.jobs.require(call.result["job_ids"][0])
    assert (job.payload["source_generation_id"], job.payload["strength"]) == (src, 0.6)
    assert not job.payload.get("edit")


async def test_with_an_edit_preset_the_tool_queues_an_edit_of_the_replied_image(open_store, tmp_path):
    env = await seed_env(await open_store(), _settings(tmp_path, "kontext"))
    src = env.alice_ids[2]
    orch = Orchestrator(env.services)
    args = {"prompt": "make it night", "edit": True, "strength": 0.6}
    call = await orch.execute(env.ctx(replied_generation_id=src), {"tool": "generate", "args": args})
    assert call.ok, call.result
    assert call.result["mode"] == "edit" and call.result["based_on"] == src and "notes" not in call.result
    assert call.result["edit"] == {"instruction": "make it night", "from": f"the replied image #{src}"}
    job = await env.jobs.require(call.result["job_ids"][0])
    p = job.payload
    assert (p["edit"], p["preset"], p["source_generation_id"], p["strength"], p["seed"]) == (
        True,
        "kontext",
        src,
        None,
        333,
    )
    attached = env.ctx(attachments=(Attachment("photo.png", png()),))
    call = await orch.execute(
        attached, {"tool": "generate", "args": {"prompt": "remove the hat", "edit": True}}
    )
    assert call.ok, call.result
    upload = (await env.jobs.require(call.result["job_ids"][0])).payload
    assert upload["edit"] and upload["source_image"] and upload.get("source_generation_id") is None


async def test_edit_refuses_too_many_images_no_image_and_guidance(open_store, tmp_path):
    env = await seed_env(await open_store(), _settings(tmp_path, "kontext"))
    orch = Orchestrator(env.services)
    two = env.ctx(attachments=(Attachment("a.png", png()), Attachment("b.png", png((1, 2, 3)))))
    call = await orch.execute(two, {"tool": "generate", "args": {"prompt": "make it night", "edit": True}})
    assert not call.ok and "kontext edits take one image; you gave 2" in call.error
    call = await orch.execute(
        env.ctx(), {"tool": "generate", "args": {"prompt": "make it night", "edit": True}}
    )
    assert not call.ok and "an edit needs an image" in call.error
    bad = env.ctx(attachments=(Attachment("notes.png", b"not a picture"),))
    call = await orch.execute(bad, {"tool": "generate", "args": {"prompt": "make it night", "edit": True}})
    assert not call.ok and call.error
    args = {"prompt": "make it night", "edit": True, "outpaint": "left"}
    call = await orch.execute(
        env.ctx(replied_generation_id=env.alice_ids[0]), {"tool": "generate", "args": args}
    )
    assert not call.ok and "edit takes no outpaint" in call.error
    assert (await env.jobs.counts())["queued"] == 0
