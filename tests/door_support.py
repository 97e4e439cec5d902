"""Door checks through the fake Discord: ask about a file, find the bot's answer, and a real agent to answer.

The agent is the real one (rules, orchestrator, tools) over the running bot's store, jobs and submitter; only
its language and vision models are scripted, so a turn shows which tool a good file went to.
"""

from __future__ import annotations

from bot.agent import Agent
from engine.core import Engine
from tests.discord_fake import Call, FakeDiscord
from tests.llm_fakes import ScriptedChatModel
from tools.context import Services as ToolServices
from tools.orchestrator import Orchestrator

ASK = "what do you think of this?"
CRITIQUE = {
    "critique": ["Warm colours, a clear subject; the edges are soft."],
    "matches_prompt": True,
    "fixes": {"prompt_add": ["sharper edges"], "prompt_remove": [], "negative_add": [], "strength": 0.4,
              "style": None},
}  # fmt: skip


def critique_agent(engine: Engine, script: list | None = None, critiques: int = 4) -> Agent:
    """The real agent on the bot's engine; the LLM replies from `script`, the vision model with CRITIQUE."""
    tools = ToolServices(
        store=engine.store, jobs=engine.jobs, settings=engine.settings, submitter=engine.submitter,
        llm=ScriptedChatModel(list(script or [])), vision=ScriptedChatModel([CRITIQUE] * critiques),
    )  # fmt: skip
    return Agent(tools.llm, Orchestrator(tools), engine.settings)


def ask_about(fake: FakeDiscord, name: str, data: bytes, ctype: str, text: str = ASK) -> dict:
    """A message from alice that mentions the bot and carries one file."""
    me = f"<@{fake.bot_user['id']}>"
    att = fake.attachment(name, data, ctype)
    return fake.message(fake.alice, f"{me} {text}", attachments=[att], mentions=[fake.bot_user])


def answers_to(fake: FakeDiscord, message_id: str) -> list[Call]:
    """The bot's channel posts that reply to `message_id`."""
    return [
        c
        for c in fake.find("POST", r"/channels/\d+/messages$")
        if str((c.body.get("message_reference") or {}).get("message_id")) == str(message_id)
    ]


async def wait_answer(fake: FakeDiscord, message_id: str, what: str, timeout: float = 30.0) -> Call:
    """The bot's first reply to `message_id` (AssertionError naming `what` when none comes)."""
    found = await fake.wait_for(lambda: answers_to(fake, message_id), timeout=timeout, what=what)
    return found[0]
