"""/describe (issue 15): prompt suggestions from the vision model, styled per family, on every front."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.chat import TerminalChat
from bot.usecases.describe import Described, describe_image, describe_text, prompt_from_text
from bot.usecases.errors import UserError
from engine.jobs.policy import Requester
from tests.agent_support import ALICE, GUILD, make_settings, seed_env
from tests.discord_support import ScriptedAgent, running_env
from tests.llm_fakes import ScriptedChatModel
from tests.test_vision_llama import picture, png_bytes, vision_model
from tools.context import Attachment
from tools.context import Services as ToolServices
from tools.describe import as_sentence, as_tags, prompt_style, styled
from tools.orchestrator import Orchestrator

FOUR = {"prompts": ["A red Fox. In the snow", "red fox, snow, winter", "a fox with snow and pine trees", "A red fox, in the snow."]}


def _png(color=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


def test_family_prompt_styles_tags_for_sd15_and_sentences_for_sdxl_and_flux():
    assert prompt_style("sd15") == "tags" and prompt_style("sdxl") == prompt_style("flux") == "sentences"
    assert prompt_style("qwen-edit") == "sentences"
    assert as_tags("A red Fox. In the snow!") == "a red fox, in the snow"
    assert as_tags("fox, fox; FOX with hat") == "fox, hat"
    assert as_sentence("  a fox in snow ,") == "A fox in snow."
    assert as_sentence("Done already!") == "Done already!"
    assert styled(FOUR["prompts"], "sd15") == [
        "a red fox, in the snow", "red fox, snow, winter", "a fox, snow, pine trees"]  # fmt: skip
    assert styled(FOUR["prompts"], "flux") == [
        "A red Fox. In the snow.", "Red fox, snow, winter.", "A fox with snow and pine trees.", "A red fox, in the snow."
    ]  # fmt: skip


def test_the_reply_text_carries_the_prompts_the_buttons_read_back():
    d = Described(["a fox, snow", "a cat, rain"], "sd15", "sd15", "tags")
    text = describe_text(d)
    assert "`sd15` (sd15, tag lists)" in text
    assert prompt_from_text(text, 1) == "a fox, snow" and prompt_from_text(text, 2) == "a cat, rain"
    with pytest.raises(UserError, match="no prompt suggestion 3"):
        prompt_from_text(text, 3)


async def test_describe_tool_styles_the_scripted_answer_for_the_users_preset(open_store, tmp_path):
    store = await open_store()
    env = await seed_env(store, make_settings(tmp_path), vision=ScriptedChatModel([FOUR, FOUR]))
    att = Attachment("up.png", _png(), "image/png")
    call = await Orchestrator(env.services).execute(env.ctx(attachments=(att,)), {"tool": "describe", "args": {}})
    assert call.ok, call.result
    assert call.result["family"] == "sd15" and call.result["style"] == "tags"  # the test settings' default
    assert call.result["prompts"][0] == "a red fox, in the snow" and len(call.result["prompts"]) == 3
    schema = env.services.vision.schemas[0]
    assert schema["properties"]["prompts"]["minItems"] == 4 == schema["properties"]["prompts"]["maxItems"]
    who = Requester(ALICE, GUILD)
    d = await describe_image(env.services, who, generation_id=env.alice_ids[2], preset="sdxl")
    assert (d.family, d.style, d.generation_id) == ("sdxl", "sentences", env.alice_ids[2])
    assert len(d.prompts) == 4 and all(p.endswith(".") and p[0].isupper() for p in d.prompts)


async def test_describe_errors_are_specific(open_store, tmp_path):
    store = await open_store()
    env = await seed_env(store, make_settings(tmp_path))  # no vision model
    who = Requester(ALICE, GUILD)
    with pytest.raises(UserError, match="describe needs a vision model"):
        await describe_image(env.services, who, image=_png())
    seen = ToolServices(env.store, env.jobs, env.settings, vision=ScriptedChatModel([FOUR]))
    with pytest.raises(UserError, match="no image to describe"):
        await describe_image(seen, Requester(4242, GUILD))  # a user without any image
    with pytest.raises(UserError, match="no image preset named 'no-such-preset'"):
        await describe_image(seen, who, image=_png(), preset="no-such-preset")
    with pytest.raises(UserError, match="no generation #999999"):
        await describe_image(seen, who, generation_id=999999)
    await env.store.settings.update("guild", GUILD, tools={"describe": {"enabled": False}})
    with pytest.raises(UserError, match="describe tool is disabled"):
        await describe_image(seen, who, image=_png())
    junk = ToolServices(env.store, env.jobs, env.settings, vision=ScriptedChatModel([{"prompts": ["one", "two", "three", ","]}]))
    with pytest.raises(UserError, match="unusable"):
        await describe_image(junk, Requester(ALICE), image=_png())


async def test_describe_runs_end_to_end_on_the_real_vision_handler(open_store, tmp_path, tmp_path_factory):
    from engine.runtime.llm.tiny_mmproj import ensure_tiny_mmproj
    from tests.test_vision_llama import text_embd_width

    mmproj = ensure_tiny_mmproj(tmp_path_factory.mktemp("mmproj"), text_embd_width())
    vision = vision_model(mmproj, 0.0)
    try:
        store = await open_store()
        env = await seed_env(store, make_settings(tmp_path), vision=vision)
        att = Attachment("upload.png", png_bytes(picture((30, 30, 200), (64, 64))), "image/png")
        call = await Orchestrator(env.services).execute(env.ctx(attachments=(att,)), {"tool": "describe", "args": {}})
    finally:
        vision.close()
    assert call.ok, call.result
    assert 1 <= len(call.result["prompts"]) <= 4
    for p in call.result["prompts"]:  # sd15: tag lists, never sentences
        assert p == p.lower() and "." not in p and p.strip()


class _Agent(ScriptedAgent):
    def __init__(self, services: ToolServices):
        super().__init__()
        self.orchestrator = Orchestrator(services)


async def test_discord_describe_posts_prompts_with_buttons_that_generate_them(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake, s = env.fake, env.services
        env.bot.agent = _Agent(ToolServices(s.store, s.jobs, s.settings, vision=ScriptedChatModel([FOUR])))
        slash = fake.slash("describe", image=fake.attachment("look.png", _png()))
        await env.send("INTERACTION_CREATE", slash)
        tok = slash["token"]
        [edit] = await fake.wait_for(lambda: fake.find("PATCH", rf"{tok}/messages/@original"), what="prompts")
        body = edit.body
        assert "Prompts for this image" in body["content"] and "(sdxl, sentences)" in body["content"]
        ids = [c["custom_id"] for row in body["components"] for c in row["components"]]
        assert ids == [f"atelier:ds:{i}:sdxl" for i in (1, 2, 3, 4)]
        message = fake.messages[fake.originals[tok]]
        click = fake.click(message, "atelier:ds:2:sdxl", who=fake.bob)
        await env.send("INTERACTION_CREATE", click)
        await fake.wait_for(lambda: fake.find("PATCH", rf"{click['token']}/messages/@original"), what="queued")
        job = await s.jobs.require(1)
        assert job.payload["prompt"] == "Red fox, snow, winter." and job.payload["preset"] == "sdxl"
        assert job.user_id == int(fake.bob["id"])
        bad = fake.slash("describe", image=fake.attachment("x.png", b"not a picture"))
        await env.send("INTERACTION_CREATE", bad)
        err = await fake.wait_for(lambda: fake.find("POST", rf"webhooks/\d+/{bad['token']}$"), what="error")
        assert "image: x.png was refused" in err[0].body["content"] and err[0].body["flags"] & 64


async def test_terminal_describe_uses_the_attached_image(open_store, tmp_path):
    store = await open_store()
    env = await seed_env(store, make_settings(tmp_path), vision=ScriptedChatModel([FOUR]))

    class _Chat(TerminalChat):
        def __init__(self):
            self.agent, self.user_id, self.pending, self.last_generation = _Agent(env.services), ALICE, [], None

    chat = _Chat()
    chat.pending = [Attachment("a.png", _png())]
    out = await chat.command("/describe sdxl")
    assert "`sdxl` (sdxl, sentences)" in out and "**1.** A red Fox. In the snow." in out
    assert chat.pending == []
    assert "/describe" in await chat.command("/help")
