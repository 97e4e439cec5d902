"""Pure helpers of the Discord front: text splitting, progress text, upload fitting, payloads, bot setup."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import discord
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.discord import render
from bot.discord.bot import AtelierBot
from bot.discord.target import token_expired
from bot.usecases.errors import UserError
from bot.usecases.jobs import followup_payload, job_output
from engine.config import Discord, Settings


@given(st.text(alphabet=st.sampled_from("ab `\n"), max_size=6000), st.integers(min_value=40, max_value=2000))
@settings(max_examples=200, deadline=None)
def test_split_text_respects_the_limit_and_keeps_every_word(text, limit):
    parts = render.split_text(text, limit)
    assert all(len(p) <= limit for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)
    joined = "".join(p.replace("```", "") for p in parts)
    assert "".join(joined.split()) == "".join(text.replace("```", "").split())  # nothing lost or added


def test_split_text_prefers_paragraphs_and_rejects_tiny_limits():
    text = "first paragraph here.\n\n" + "second " * 10
    assert render.split_text(text, 40)[0] == "first paragraph here."
    assert render.split_text("   ") == []
    with pytest.raises(ValueError, match="at least 20"):
        render.split_text("x", 5)


def test_progress_text_shows_position_then_percent():
    s = render.ProgressState(7, position=3)
    assert "position 3" in render.progress_text(s)
    s.running, s.step, s.total = True, 5, 20
    assert "25% (step 5/20)" in render.progress_text(s)


def test_fit_upload_passes_small_files_and_shrinks_big_ones():
    buf = io.BytesIO()
    Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3)).save(buf, format="PNG")
    data = buf.getvalue()
    assert render.fit_upload(data, len(data), "a.png") == (data, "a.png")
    small, name = render.fit_upload(data, 30_000, "a.png")
    assert name == "a.jpg" and len(small) <= 30_000
    with pytest.raises(render.UploadTooLarge):
        render.fit_upload(data, 10, "a.png")


def test_token_expiry_margin():
    assert not token_expired(1000.0, now=1000.0 + 13 * 60)
    assert token_expired(1000.0, now=1000.0 + 14.5 * 60)


def _job(**kw):
    base = dict(id=3, kind="generate", state="done", payload={"prompt": "p", "seed": 5, "count": 2},
                result={"generation_id": 9, "images": ["/x/a.png", "/x/b.png"], "seeds": [5, 6],
                        "spoilers": [False, True]})  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_followup_payloads_match_the_engine_payload_models():
    from engine.jobs.payloads import GeneratePayload, UpscalePayload, VariationPayload

    job = _job()
    GeneratePayload.model_validate(followup_payload("generate", job, None))
    assert "seed" not in followup_payload("generate", job, None)
    assert VariationPayload.model_validate(followup_payload("variation", job, 1)).index == 1
    UpscalePayload.model_validate(followup_payload("upscale", job, 0))
    with pytest.raises(UserError, match="no image 3"):
        followup_payload("variation", job, 2)
    with pytest.raises(UserError, match="is failed"):
        followup_payload("upscale", _job(state="failed"), 0)
    out = job_output(job)
    assert out.spoilers == [False, True] and out.generation_id == 9


def test_bot_defaults_no_mentions_no_privileged_intent_and_optional_prefix():
    services = SimpleNamespace(settings=Settings(), runner=None)
    bot = AtelierBot(services, agent=None)
    assert not bot.intents.message_content and bot.intents.guild_messages and bot.intents.dm_messages
    am = bot.allowed_mentions
    assert am is not None and not (am.everyone or am.users or am.roles or am.replied_user)
    assert not bot.prefix_commands
    on = SimpleNamespace(settings=Settings(discord=Discord(message_content_intent=True)), runner=None)
    bot2 = AtelierBot(on, agent=None)
    assert bot2.intents.message_content and bot2.prefix_commands and bot2.command_prefix == "!"
    assert isinstance(bot2.allowed_mentions, discord.AllowedMentions)
