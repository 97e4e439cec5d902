"""Tool errors the user can fix reach the user's reply as they are (tools/errors.py USER_ERRORS), not only the model."""

from __future__ import annotations

from bot.agent import Agent
from engine.config import Queue
from tests.agent_support import ALICE, CHANNEL, GUILD, make_settings, seed_env
from tests.discord_support import make_settings as discord_settings
from tests.discord_support import running_env
from tests.door_support import critique_agent, wait_answer
from tests.llm_fakes import ScriptedChatModel
from tests.test_agent import turn
from tools.orchestrator import Orchestrator


async def test_an_unknown_style_is_named_in_the_reply_with_the_known_ones(open_store, tmp_path):
    env = await seed_env(await open_store(), make_settings(tmp_path))
    # a generation whose style has since left the library
    retired = await env.store.history.add(
        user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL, prompt="a pier at dawn", seed=5, preset="sd15",
        style="retired-style", images=["alice/0.png"],
    )  # fmt: skip
    model = ScriptedChatModel([{"prompt": "a pier at dawn, darker"}])
    agent = Agent(model, Orchestrator(env.services), env.settings)
    result = await agent.run(turn("make it darker", replied_generation_id=retired))
    (call,) = [c for c in result.tool_calls if c.name == "generate"]
    assert call.executed and call.error.startswith("no style named 'retired-style'")
    assert result.reply.startswith("generate did not work: no style named 'retired-style'. Known: ")
    assert "cinematic" in result.reply  # the names the user can pick instead
    assert sum((await env.jobs.counts()).values()) == 0


async def test_a_used_up_quota_reaches_the_discord_reply_and_queues_nothing(tmp_path, monkeypatch):
    settings = discord_settings(tmp_path).model_copy(update={"queue": Queue(daily_quota=1)})
    async with running_env(tmp_path, monkeypatch, settings=settings, start_runner=False) as env:
        fake = env.fake
        script = [{"prompt": "a red fox"}, {"prompt": "a blue fox"}]
        env.bot.agent = critique_agent(env.services, script=script)
        me = f"<@{fake.bot_user['id']}>"
        for text in ("draw a red fox", "draw a blue fox"):
            ask = fake.message(fake.alice, f"{me} {text}", mentions=[fake.bot_user])
            await env.send("MESSAGE_CREATE", ask)
            answer = (await wait_answer(fake, ask["id"], f"answer to {text!r}")).body["content"]
        assert answer.startswith("generate did not work: you have used your 1 jobs for the last 24 hours"), (
            answer
        )
        assert (await env.services.jobs.counts())["queued"] == 1  # only the first request's job
