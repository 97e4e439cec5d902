"""Bad images are stopped at the door, on every front, with their specific message; good ones go on."""

from __future__ import annotations

import pytest

from bot.agent import AgentResult
from bot.chat import TerminalChat
from bot.usecases.errors import UserError
from engine.config import Images
from tests.agent_support import make_settings as agent_settings
from tests.agent_support import seed_env
from tests.discord_support import running_env
from tests.door_files import BAD, GOOD, big_bmp
from tools.context import Attachment
from tools.uploads import RejectedUpload, check_upload

LIMITS = "I take PNG/JPEG/WEBP/GIF images up to 20 MB and 16.8 megapixels"


@pytest.mark.parametrize(("name", "data", "ctype", "words"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_file_gets_its_own_message_with_the_limits(name, data, ctype, words):
    with pytest.raises(RejectedUpload) as e:
        check_upload(Images(), Attachment(name, big_bmp() if data is None else data, ctype))
    assert str(e.value).startswith(name) and words in str(e.value) and LIMITS in str(e.value)


@pytest.mark.parametrize(("name", "data", "ctype"), GOOD, ids=[g[0] for g in GOOD])
def test_good_files_pass(name, data, ctype):
    assert check_upload(Images(), Attachment(name, data, ctype)).data == data


async def test_discord_answers_bad_files_at_once_without_the_agent_and_draws_next(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake, agent = env.fake, env.agent
        me = f"<@{fake.bot_user['id']}>"
        for i, (name, data, ctype, words) in enumerate(BAD):
            att = fake.attachment(name, big_bmp() if data is None else data, ctype)
            m = fake.message(fake.alice, f"{me} what do you think of this?", attachments=[att],
                             mentions=[fake.bot_user])  # fmt: skip
            await env.send("MESSAGE_CREATE", m)
            sent = await fake.wait_for(lambda n=i + 1: (lambda s: s if len(s) >= n else None)(
                fake.find("POST", r"/channels/\d+/messages$")), what=f"answer to {name}")  # fmt: skip
            text = sent[i].body["content"]
            assert words in text and name in text and LIMITS in text, text
        assert agent.turns == []  # no bad file reached the agent
        assert sum((await env.services.jobs.counts()).values()) == 0  # and no job was queued
        good_name, good, ctype = GOOD[0]
        agent.results += [AgentResult(reply="Nice colours."), AgentResult(reply="Drawing a fox.")]
        m = fake.message(fake.alice, f"{me} what do you think of this?", mentions=[fake.bot_user],
                         attachments=[fake.attachment(good_name, good, ctype)])  # fmt: skip
        await env.send("MESSAGE_CREATE", m)
        await env.send("MESSAGE_CREATE", fake.message(fake.alice, f"{me} draw a fox", mentions=[fake.bot_user]))
        await fake.wait_for(lambda: len(agent.turns) == 2, what="both turns")
        # the two messages are handled concurrently: the image's turn waits for its download and decode
        photo, fox = sorted(agent.turns, key=lambda t: t.text == "draw a fox")
        assert [a.name for a in photo.attachments] == [good_name]
        assert fox.text == "draw a fox" and fox.attachments == []


async def test_terminal_attach_checks_the_file_at_the_door(open_store, tmp_path):
    env = await seed_env(await open_store(), agent_settings(tmp_path))

    class Engine:
        settings = env.settings

    chat = TerminalChat(Engine(), agent=None)
    for name, data, _, words in BAD[1:]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UserError, match=words.split(",")[0]):
            await chat.attach(str(path))
    assert chat.pending == []
    path = tmp_path / GOOD[0][0]
    path.write_bytes(GOOD[0][1])
    assert (await chat.attach(str(path))).startswith("attached photo.webp")
    assert [a.name for a in chat.pending] == ["photo.webp"]
