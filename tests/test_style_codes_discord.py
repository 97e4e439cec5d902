"""/stylecode create|show|list|revoke and /imagine style_code through the fake Discord."""

from __future__ import annotations

from tests.discord_support import running_env
from tests.test_discord_commands import _answer


async def _ephemeral(env, payload) -> tuple[str, bool]:
    """The answer's text and whether it is ephemeral (flag 64)."""
    text = await _answer(env, payload)
    tok = payload["token"]
    calls = env.fake.find("POST", rf"{tok}/callback")
    return text, bool(calls and (calls[0].body.get("data") or {}).get("flags", 0) & 64)


async def test_stylecode_create_show_autocomplete_imagine_and_revoke(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake
        await _answer(env, fake.slash("style", sub="add", name="inky", template="{prompt}, ink wash"))
        made, private = await _ephemeral(env, fake.slash("stylecode", sub="create", style="inky"))
        code = made.split("**")[1]
        assert "usable by this server" in made and private
        assert "give exactly one" in await _answer(env, fake.slash("stylecode", sub="create"))
        shown = await _answer(env, fake.slash("stylecode", fake.bob, sub="show", code=code.lower()))
        assert f"<@{fake.alice['id']}>" in shown and "style `inky`" in shown and "ink wash" in shown
        assert code in await _answer(env, fake.slash("stylecode", fake.bob, sub="list"))

        ask = fake.autocomplete("imagine", "style_code", code[:2], fake.bob, prompt="x")
        await env.send("INTERACTION_CREATE", ask)
        cb = await fake.wait_for(lambda: fake.find("POST", rf"{ask['token']}/callback"))
        assert [c["value"] for c in cb[0].body["data"]["choices"]] == [code]

        await env.send("INTERACTION_CREATE", fake.slash("imagine", fake.bob, prompt="a fox", style_code=code))
        await fake.wait_for(lambda: fake.find("PATCH", r"/messages/@original"), what="queued edit")
        job = await env.services.jobs.require(1)
        assert (job.payload["style"], job.payload["style_code"]) == ("inky", code)
        assert job.payload["shared"]["style"]["content"] == "{prompt}, ink wash"

        refused = await _answer(env, fake.slash("stylecode", fake.bob, sub="revoke", code=code))
        assert "only its creator" in refused
        assert "revoked" in await _answer(env, fake.slash("stylecode", sub="revoke", code=code))
        gone = fake.slash("imagine", fake.bob, prompt="a fox", style_code=code)
        await env.send("INTERACTION_CREATE", gone)
        err = await fake.wait_for(lambda: fake.find("POST", rf"webhooks/\d+/{gone['token']}$"))
        assert "unknown or not shared with you" in err[0].body["content"] and err[0].body["flags"] & 64
