"""The guild's tool policy is one rule on every front: /imagine, a result button and a chat request are refused
with the same message for a user whom the policy denies generation (engine.jobs.policy via engine.submit)."""

from __future__ import annotations

from tests.discord_support import real_bot, running_env
from tests.test_discord_flows import _result_message

POLICY = {"tools": {"generate": {"allow_roles": [4242]}}}  # only a role nobody here has
REFUSAL = "the generate tool is limited to certain roles on this server"


async def _ephemeral(fake, token: str) -> str:
    def answered():
        follow = fake.find("POST", rf"webhooks/\d+/{token}$")
        if follow:
            return follow
        cb = fake.find("POST", rf"{token}/callback")
        return cb if cb and cb[0].body["type"] == 4 else None

    body = (await fake.wait_for(answered, what="the ephemeral answer"))[0].body
    return body.get("content") or (body.get("data") or {}).get("content", "")


async def test_slash_command_and_buttons_follow_the_guild_policy(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake, store = env.fake, env.services.store
        msg, job_id = await _result_message(env, prompt="a lighthouse", count=1)  # allowed before the policy
        await store.settings.update("guild", fake.guild_id, **POLICY)
        before = await env.services.jobs.counts()

        denied = fake.slash("imagine", prompt="another lighthouse")
        await env.send("INTERACTION_CREATE", denied)
        assert REFUSAL in await _ephemeral(fake, denied["token"])
        for custom_id in (f"atelier:r:{job_id}", f"atelier:v:{job_id}:1", f"atelier:u:{job_id}:1",
                          f"atelier:o:{job_id}:left:1"):  # fmt: skip
            click = fake.click(msg, custom_id, who=fake.bob)
            await env.send("INTERACTION_CREATE", click)
            assert REFUSAL in await _ephemeral(fake, click["token"]), custom_id
        after = await env.services.jobs.counts()
        assert sum(after.values()) == sum(before.values())  # nothing was queued


async def test_a_chat_request_gets_the_same_refusal(tmp_path, monkeypatch, tiny_models_dir):
    async with real_bot(tmp_path, monkeypatch, tiny_models_dir) as (fake, bot, services, agent):
        await services.store.settings.update("guild", fake.guild_id, **POLICY)
        text = f"<@{fake.bot_user['id']}> draw a red fox"
        await fake.dispatch("MESSAGE_CREATE", fake.message(fake.alice, text, mentions=[fake.bot_user]))

        def replied():
            return [c.body.get("content", "") for c in fake.find("POST", r"/channels/\d+/messages$")]

        replies = await fake.wait_for(replied, timeout=240, what="the agent's reply")
        assert any(REFUSAL in r for r in replies), replies
        assert sum((await services.jobs.counts()).values()) == 0
