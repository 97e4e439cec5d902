"""Slash commands other than /imagine: presets, styles, history, settings, queue, cancel, help, autocomplete."""

from __future__ import annotations

from engine.runtime.diffusion.request import aspect_size
from tests.discord_support import running_env


async def _answer(env, payload) -> str:
    """Send an interaction; return the text of its (ephemeral) answer."""
    fake, tok = env.fake, payload["token"]
    await env.send("INTERACTION_CREATE", payload)

    def answered():
        follow = fake.find("POST", rf"webhooks/\d+/{tok}$")
        if follow:
            return follow
        cb = fake.find("POST", rf"{tok}/callback")
        return cb if cb and cb[0].body["type"] in (4, 8) else None

    calls = await fake.wait_for(answered, what=f"answer to {payload['data'].get('name')}")
    body = calls[0].body
    return body.get("content") or (body.get("data") or {}).get("content") or str(body.get("data"))


async def test_preset_save_use_list_delete_and_guild_scope_needs_admin(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        text = await _answer(
            env, fake.slash("preset", sub="save", name="mine", base="sd15", steps=12, aspect="16:9")
        )
        assert "Saved preset `mine`" in text
        p = await env.services.store.presets.resolve("image", "mine", int(fake.alice["id"]), fake.guild_id)
        assert (p["steps"], p["width"], p["height"], p["scope"]) == (12, *aspect_size("16:9", "sd15"), "user")
        assert "now the default" in await _answer(env, fake.slash("preset", sub="use", name="mine"))
        assert (await env.services.store.settings.get("user", int(fake.alice["id"])))["preset"] == "mine"
        listing = await _answer(env, fake.slash("preset", sub="list"))
        assert "★ `mine` (user)" in listing and "`sd15` (global)" in listing
        bob_try = await _answer(
            env, fake.slash("preset", fake.bob, sub="save", name="srv", base="sd15", scope="guild")
        )
        assert "only server admins" in bob_try
        assert "Deleted preset `mine`" in await _answer(env, fake.slash("preset", sub="delete", name="mine"))
        bad = await _answer(env, fake.slash("preset", sub="show", name="sd16"))
        assert "no image preset named 'sd16'" in bad and "sd15" in bad


async def test_style_add_show_and_history_settings_queue_cancel_help(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake
        text = await _answer(env, fake.slash("style", sub="add", name="inky", template="{prompt}, ink wash"))
        assert "Style `inky` saved" in text
        assert "ink wash" in await _answer(env, fake.slash("style", sub="show", name="inky"))
        refused = await _answer(env, fake.slash("style", fake.bob, sub="add", name="inky", template="x"))
        assert "only its author or an admin" in refused
        await env.services.store.history.add(
            user_id=int(fake.alice["id"]), prompt="a lighthouse at dusk", seed=7
        )
        found = await _answer(env, fake.slash("history", sub="search", query="lighthouse"))
        assert "lighthouse" in found and "seed 7" in found
        s = await _answer(env, fake.slash("settings", style="inky", count=3))
        assert "style: `inky`" in s and "count: `3`" in s
        uid = int(fake.alice["id"])
        job = await env.services.submit(
            "generate", {"prompt": "waiting"}, user_id=uid, channel_id=fake.channel_id
        )
        assert f"#{job} generate — position 1" in await _answer(env, fake.slash("queue"))
        assert f"Job #{job} cancelled" in await _answer(env, fake.slash("cancel"))
        assert (await env.services.jobs.require(job)).state == "cancelled"
        other = await _answer(env, fake.slash("cancel", fake.bob, job=job))
        assert "belongs to someone else" in other or "already cancelled" in other
        assert "/imagine" in await _answer(env, fake.slash("help"))


async def test_preset_autocomplete_offers_matching_names(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        payload = fake.autocomplete("imagine", "preset", "sd", prompt="x")
        await env.send("INTERACTION_CREATE", payload)
        cb = await fake.wait_for(lambda: fake.find("POST", rf"{payload['token']}/callback"))
        assert cb[0].body["type"] == 8
        names = [c["value"] for c in cb[0].body["data"]["choices"]]
        assert names and all("sd" in n for n in names) and "sd15" in names and "sdxl" in names


async def test_imagine_with_an_image_enqueues_img2img_from_a_checked_upload(tmp_path, monkeypatch):
    import io

    from PIL import Image

    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), "purple").save(buf, format="PNG")
        att = fake.attachment("start.png", buf.getvalue())
        await env.send("INTERACTION_CREATE", fake.slash("imagine", prompt="from this", image=att))
        await fake.wait_for(lambda: fake.find("PATCH", r"/messages/@original"), what="queued edit")
        job = await env.services.jobs.require(1)
        src = job.payload["source_image"]
        assert src.startswith(str(tmp_path)) and Image.open(src).size == (32, 32)
        not_image = fake.attachment("notes.png", b"definitely not a png")
        payload = fake.slash("imagine", prompt="x", image=not_image)
        await env.send("INTERACTION_CREATE", payload)
        err = await fake.wait_for(lambda: fake.find("POST", rf"webhooks/\d+/{payload['token']}$"))
        assert "not an image" in err[0].body["content"] and err[0].body["flags"] & 64
