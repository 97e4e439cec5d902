"""/blend jobs end to end and on every front: payload checks, use-case errors, Discord, chat, terminal."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.chat import TerminalChat
from bot.usecases import blend
from bot.usecases.errors import UserError
from engine.runtime.diffusion import InvalidRequest
from engine.store.history import Scope
from tests.discord_support import running_env
from tests.test_control_jobs import GUILD, A, box_image, px, run, settings, svc, upload  # noqa: F401
from tools.context import Attachment


def _png(color=(200, 40, 40), size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def test_weights_counts_and_the_chat_wording():
    assert blend.parse_weights("1,0.5", 3) == [1.0, 0.5, 1.0]
    assert blend.parse_weights(None, 2) == [1.0, 1.0] == blend.parse_weights(" ", 2)
    with pytest.raises(UserError, match="3 weights for 2 images"):
        blend.parse_weights("1,1,1", 2)
    with pytest.raises(UserError, match="weight 2 \\('lots'\\) is not a number"):
        blend.parse_weights("1,lots", 2)
    with pytest.raises(UserError, match="weight 1 must be between 0 and 2, got 5"):
        blend.parse_weights("5", 2)
    with pytest.raises(UserError, match="all 0"):
        blend.parse_weights("0,0", 2)
    with pytest.raises(UserError, match="blend needs 2 to 5 images; got 1"):
        blend.check_count(1)
    with pytest.raises(UserError, match="at most 5 images; got 6"):
        blend.check_count(6)
    for text in ("blend these", "can you merge both pictures?", "mix these two", "/blend", "combine them please"):
        assert blend.asks_to_blend(text), text
    for text in ("a smoothie blender on a table", "mix of red and blue paint", "draw a cat"):
        assert not blend.asks_to_blend(text), text


async def test_blend_job_records_weights_and_sources_and_differs_from_one_reference(svc, settings):  # noqa: F811
    warm = upload(settings, "warm.png", Image.new("RGB", (48, 48), (240, 120, 20)))
    box = upload(settings, "box.png", box_image())
    disc = upload(settings, "disc.png", Image.new("RGB", (48, 48), (20, 60, 220)))
    single = await run(svc, reference_image=warm, reference_scale=1.0)
    payload = await blend.blend_payload(svc, [warm, box, disc], user_id=A, guild_id=GUILD, weights="1,0.5",
                                        preset="demo", seed=5)  # fmt: skip
    assert payload["prompt"] == blend.BLEND_PROMPT and payload["reference_weights"] == [1.0, 0.5, 1.0]
    job = await run(svc, **payload)
    assert job.state == "done", job.error
    ref = job.result["params"]["reference"]
    assert ref["weights"] == [1.0, 0.5, 1.0] and ref["blend"] == [warm, box, disc] and ref["scale"] == 1.0
    assert (px(job.result["images"][0]) != px(single.result["images"][0])).any()
    gen = await svc.store.history.get(job.result["generation_id"], Scope(A, GUILD))
    assert gen is not None and gen.params["reference"]["weights"] == [1.0, 0.5, 1.0]
    png = Image.open(job.result["images"][0])
    assert "0.5" in str(png.info)  # the weights travel in the PNG's parameters too
    gone = str(settings.path("data_dir") / "uploads" / "gone.png")
    failed = await run(svc, reference_image=warm, blend_images=[gone])
    assert failed.state == "failed" and "blend image 2" in failed.error


async def test_bad_blend_payloads_are_refused_at_submission(svc, settings):  # noqa: F811
    warm = upload(settings, "w.png", Image.new("RGB", (48, 48), (240, 120, 20)))
    cases = [
        ({"blend_images": [warm]}, "need a first reference"),
        ({"reference_image": warm, "blend_images": [warm], "reference_weights": [1.0]}, "1 reference_weights for 2"),
        ({"reference_image": warm, "blend_images": [warm] * 5}, "at most 4"),
        ({"reference_image": warm, "blend_images": [warm], "reference_weights": [0, 0]}, "must not all be 0"),
        ({"reference_image": warm, "blend_images": [warm], "reference_weights": [1, 3]}, "less than or equal to 2"),
    ]
    for extra, message in cases:
        with pytest.raises(InvalidRequest, match=message):
            await svc.submit("generate", {"prompt": "x", "preset": "demo"} | extra, user_id=A, guild_id=GUILD)


async def test_terminal_blend_uses_the_attached_images(svc, settings):  # noqa: F811
    chat = TerminalChat(svc, agent=None)  # type: ignore[arg-type]  # /blend needs no agent
    chat.pending = [Attachment("a.png", _png())]
    with pytest.raises(UserError, match="blend needs 2 to 5 images; got 1"):
        await chat.command("/blend")
    chat.pending.append(Attachment("b.png", _png((10, 200, 90))))
    with pytest.raises(UserError, match="unknown option --strength"):
        await chat.command("/blend --strength 2")
    out = await chat.command("/blend --weights 1,0.25 a foggy morning")
    assert ".png" in out and chat.pending == []
    job = (await svc.jobs.user_jobs(chat.user_id, ("done",)))[-1]
    assert job.payload["reference_weights"] == [1.0, 0.25] and job.payload["prompt"] == "a foggy morning"


async def _error(env, payload) -> str:
    await env.send("INTERACTION_CREATE", payload)
    tok = payload["token"]
    err = await env.fake.wait_for(lambda: env.fake.find("POST", rf"webhooks/\d+/{tok}$"), what="error followup")
    assert err[0].body["flags"] & 64
    return err[0].body["content"]


async def test_discord_blend_command_and_blend_these_reply(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake, jobs = env.fake, env.services.jobs
        one = fake.attachment("a.png", _png())
        assert "blend needs 2 to 5 images; got 1" in await _error(env, fake.slash("blend", image1=one))
        junk = fake.attachment("b.txt", b"not an image", "text/plain")
        assert "image2: b.txt was refused" in await _error(env, fake.slash("blend", image1=one, image2=junk))
        two = fake.attachment("c.png", _png((0, 90, 200)))
        assert "3 weights for 2 images" in await _error(env, fake.slash("blend", image1=one, image2=two,
                                                                         weights="1,1,1"))  # fmt: skip
        assert (await jobs.counts())["queued"] == 0
        slash = fake.slash("blend", image1=one, image2=two, weights="1,0.5", prompt="a misty forest")
        await env.send("INTERACTION_CREATE", slash)
        await fake.wait_for(lambda: fake.find("PATCH", rf"{slash['token']}/messages/@original"), what="queued")
        job = await jobs.require(1)
        assert job.payload["reference_weights"] == [1.0, 0.5] and len(job.payload["blend_images"]) == 1
        assert job.payload["prompt"] == "a misty forest" and job.payload["reference_scale"] == blend.BLEND_SCALE
        me = f"<@{fake.bot_user['id']}>"
        three = [fake.attachment(f"{i}.png", _png((i * 40, 10, 10))) for i in range(3)]
        msg = fake.message(fake.alice, f"{me} blend these", attachments=three, mentions=[fake.bot_user])
        await env.send("MESSAGE_CREATE", msg)
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$"), what="blend reply")
        assert "Blending 3 images" in sent[0].body["content"]
        job = await jobs.require(2)
        assert len(job.payload["blend_images"]) == 2 and job.payload["reference_weights"] == [1.0, 1.0, 1.0]
        six = [fake.attachment(f"{i}.png", _png((i * 30, 10, 10))) for i in range(6)]
        msg = fake.message(fake.alice, f"{me} blend these", attachments=six, mentions=[fake.bot_user])
        await env.send("MESSAGE_CREATE", msg)
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$")[1:], what="error reply")
        assert "at most 5 images; got 6" in sent[0].body["content"]
