"""The door on Discord, per file: a bad file in the REPLIED-TO message is stopped too; good files go to critique."""

from __future__ import annotations

import pytest

from tests.discord_support import running_env
from tests.door_files import BAD, GOOD, big_bmp
from tests.door_support import CRITIQUE, ask_about, critique_agent, wait_answer

LIMITS = "I take PNG/JPEG/WEBP/GIF images up to 20 MB and 16.8 megapixels"


@pytest.mark.parametrize("text", ["what do you think?", "use this pose"], ids=["critique", "pose-intent"])
async def test_a_bad_file_in_the_replied_message_gets_its_message_and_never_reaches_the_agent(
    tmp_path, monkeypatch, text
):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        me = f"<@{fake.bot_user['id']}>"
        for name, data, ctype, words in BAD:
            att = fake.attachment(name, big_bmp() if data is None else data, ctype)
            shared = fake.message(fake.bob, "look at this", attachments=[att])
            ask = fake.message(
                fake.alice, f"{me} {text}", reply_to=int(shared["id"]), mentions=[fake.bot_user]
            )
            await env.send("MESSAGE_CREATE", ask)
            answer = (await wait_answer(fake, ask["id"], f"answer about the replied {name}")).body["content"]
            assert name in answer and words in answer and LIMITS in answer, answer
        assert env.agent.turns == []  # no bad file reached the agent
        assert sum((await env.services.jobs.counts()).values()) == 0  # and no job was queued


async def test_good_files_go_to_critique_own_or_replied_and_the_next_request_draws(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        env.bot.agent = agent = critique_agent(env.services, script=[{"prompt": "a red fox"}])
        vision = agent.orchestrator.services.vision
        critique = CRITIQUE["critique"][0]
        for name, data, ctype in GOOD:  # a valid WEBP, and a JPEG named .png
            ask = ask_about(fake, name, data, ctype)
            await env.send("MESSAGE_CREATE", ask)
            answer = (await wait_answer(fake, ask["id"], f"critique of {name}")).body["content"]
            assert answer.startswith(critique), answer
        name, data, ctype = GOOD[0]
        shared = fake.message(fake.bob, "my painting", attachments=[fake.attachment(name, data, ctype)])
        me = f"<@{fake.bot_user['id']}>"
        ask = fake.message(
            fake.alice, f"{me} what do you think?", reply_to=int(shared["id"]), mentions=[fake.bot_user]
        )
        await env.send("MESSAGE_CREATE", ask)
        assert (
            (await wait_answer(fake, ask["id"], "critique of the replied image"))
            .body["content"]
            .startswith(critique)
        )
        assert len(vision.calls) == 3  # each good image was looked at once, by the critique tool
        assert sum((await env.services.jobs.counts()).values()) == 0  # a critique queues no job
        draw = fake.message(fake.alice, f"{me} draw a red fox", mentions=[fake.bot_user])
        await env.send("MESSAGE_CREATE", draw)
        await fake.wait_for(lambda: env.handlers.runs or None, what="the next request drawing")
        assert env.handlers.runs[0][1]["prompt"] == "a red fox"
