"""Natural-language flows: mentions, replies, image critique with fix buttons, the 3-second deadline."""

from __future__ import annotations

import io
import time

from PIL import Image

from bot.agent import AgentResult
from tests.discord_support import ScriptedAgent, custom_ids, running_env
from tests.test_discord_flows import _result_message


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 200, 0)).save(buf, format="PNG")
    return buf.getvalue()


async def test_mention_runs_the_agent_with_the_reply_chain_and_splits_long_replies(tmp_path, monkeypatch):
    long = ("word " * 900).strip()  # 4499 chars
    agent = ScriptedAgent([AgentResult(reply=long)])
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        m1 = fake.message(fake.alice, "hello bot")
        b1 = fake.message(fake.bot_user, "hi alice, what shall we draw?", reply_to=int(m1["id"]))
        m2 = fake.message(fake.alice, f"<@{fake.bot_user['id']}> tell me a long story", reply_to=int(b1["id"]),
                          mentions=[fake.bot_user])  # fmt: skip
        await env.send("MESSAGE_CREATE", m2)
        sent = await fake.wait_for(
            lambda: len(fake.find("POST", r"/channels/\d+/messages$")) >= 3, what="3 parts"
        )
        assert sent
        parts = fake.find("POST", r"/channels/\d+/messages$")
        assert len(parts) == 3 and all(len(c.body["content"]) <= 2000 for c in parts)
        assert " ".join(c.body["content"] for c in parts).split() == long.split()
        assert all(c.body["allowed_mentions"]["parse"] == [] for c in parts)
        assert str(parts[0].body["message_reference"]["message_id"]) == m2["id"]
        assert fake.find("POST", r"/channels/\d+/typing"), "no typing indicator"
        turn = agent.turns[0]
        assert [(c.content, c.from_bot) for c in turn.conversation] == [
            ("hello bot", False),
            ("hi alice, what shall we draw?", True),
            ("tell me a long story", False),
        ]
        assert turn.user_id == int(fake.alice["id"]) and turn.guild_id == fake.guild_id


async def test_messages_not_for_the_bot_are_ignored(tmp_path, monkeypatch):
    agent = ScriptedAgent([])
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        await env.send("MESSAGE_CREATE", fake.message(fake.alice, "just chatting with bob"))
        await env.send("MESSAGE_CREATE", fake.message(fake.bot_user, "my own message"))
        dm = fake.message(fake.bob, "psst", dm=True)
        agent.results.append(AgentResult(reply="hello in DM"))
        await env.send("MESSAGE_CREATE", dm)
        await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$"), what="DM reply")
        assert [t.conversation[-1].content for t in agent.turns] == ["psst"]


async def test_reply_to_a_result_gets_a_critique_with_fix_buttons(tmp_path, monkeypatch):
    agent = ScriptedAgent()
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        result, job_id = await _result_message(env)
        gen = (await env.services.jobs.require(job_id)).result["generation_id"]
        agent.results.append(AgentResult(reply="Strong shapes; the sky is flat.",
                                         follow_ups=["make the sky darker", "add a moon"]))  # fmt: skip
        q = fake.message(fake.alice, "what could be better?", reply_to=int(result["id"]))
        await env.send("MESSAGE_CREATE", q)
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$"), what="critique")
        assert agent.turns[0].replied_generation_id == gen
        body = sent[0].body
        assert "**1.** make the sky darker" in body["content"] and "**2.** add a moon" in body["content"]
        assert custom_ids(body["components"]) == [f"atelier:fix:{gen}:1", f"atelier:fix:{gen}:2"]


async def test_attached_image_reaches_the_agent(tmp_path, monkeypatch):
    agent = ScriptedAgent([AgentResult(reply="Nice greens.", follow_ups=["warmer light"])])
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        att = fake.attachment("leaf.png", _png())
        m = fake.message(fake.alice, f"<@{fake.bot_user['id']}> critique this", attachments=[att],
                         mentions=[fake.bot_user])  # fmt: skip
        await env.send("MESSAGE_CREATE", m)
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$"), what="critique")
        turn = agent.turns[0]
        assert [(a.name, a.data) for a in turn.attachments] == [("leaf.png", _png())]
        assert turn.replied_generation_id is None
        assert custom_ids(sent[0].body["components"]) == ["atelier:fix:0:1"]


async def test_fix_button_defers_before_a_slow_agent_and_tracks_its_job(tmp_path, monkeypatch):
    started: list[float] = []

    async def slow(turn):
        started.append(time.monotonic())
        job_id = await env.services.submit("generate", {"prompt": "darker sky"}, user_id=turn.user_id,
                                           guild_id=turn.guild_id, channel_id=turn.channel_id)  # fmt: skip
        return AgentResult(reply="Redrawing with a darker sky.", job_ids=[job_id])

    agent = ScriptedAgent(
        [AgentResult(reply="Flat sky.", follow_ups=["make the sky darker"]), slow], delay_s=0
    )
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        m = fake.message(fake.alice, f"<@{fake.bot_user['id']}> thoughts?", mentions=[fake.bot_user],
                         attachments=[fake.attachment("a.png", _png())])  # fmt: skip
        await env.send("MESSAGE_CREATE", m)
        critique = (await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$")))[0]
        crit_msg = next(v for v in fake.messages.values() if v["content"] == critique.body["content"])
        agent.delay_s = 3.2  # slower than Discord's 3-second acknowledgement deadline
        click = fake.click(crit_msg, "atelier:fix:0:1")
        sent_at = time.monotonic()
        await env.send("INTERACTION_CREATE", click)
        tok = click["token"]
        await fake.wait_for(
            lambda: fake.find("PATCH", rf"{tok}/messages/@original"), timeout=15, what="answer"
        )
        ack = fake.find("POST", rf"{tok}/callback")[0]
        assert ack.body["type"] == 5 and ack.at - sent_at < 3.0
        assert ack.at <= started[0] + 0.001  # acknowledged before the agent even started
        assert agent.turns[1].conversation[-1].content.endswith("make the sky darker")
        assert agent.turns[1].attachments[0].data == _png()  # the critiqued upload, from the reply reference
        final = await fake.wait_for(
            lambda: [
                c for c in fake.find("PATCH", rf"webhooks/\d+/{tok}/messages/\d+") if c.body.get("components")
            ],
            what="job result in the followup message",
        )
        assert final[-1].files and final[-1].files[0][0].endswith(".png")


async def test_agent_failure_and_empty_messages_get_a_specific_answer(tmp_path, monkeypatch):
    from tools.context import ToolError

    async def broken(turn):
        raise ToolError("the generate tool is switched off on this server")

    agent = ScriptedAgent([broken])
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        m = fake.message(fake.alice, f"<@{fake.bot_user['id']}> draw", mentions=[fake.bot_user])
        await env.send("MESSAGE_CREATE", m)
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$"), what="error reply")
        assert "switched off on this server" in sent[0].body["content"]
        empty = fake.message(fake.alice, f"<@{fake.bot_user['id']}>", mentions=[fake.bot_user])
        await env.send("MESSAGE_CREATE", empty)
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$")[1:], what="hint")
        assert "@mention me" in sent[0].body["content"] and len(agent.turns) == 1
