"""Prompt variations: LLM proposals (grammar-bounded) with a rule fallback, approval, then one batch of jobs."""

from __future__ import annotations

import pytest

from bot.chat import TerminalChat
from bot.usecases import variations
from bot.usecases.errors import UserError
from engine.jobs.policy import Requester
from tests.agent_support import ALICE, GUILD, make_settings, seed_env
from tests.discord_support import ScriptedAgent, running_env
from tests.llm_fakes import ScriptedChatModel
from tools.context import Services as ToolServices
from tools.orchestrator import Orchestrator
from tools.variations import merge, rule_variations, usable

GOOD = {"variations": ["a cat sitting on a rug", "a cat sleeping in the sun", "a cat chasing a red ball"]}


def test_rules_give_distinct_variations_that_keep_the_subject() -> None:
    out = rule_variations("a cat", 8)
    assert len(out) == len(set(out)) == 8 and all(v.startswith("a cat, ") for v in out)
    assert "a cat, sitting" in out and "a cat, sleeping" in out
    assert not any(v.endswith(", sitting") for v in rule_variations("a cat sitting", 3))
    assert not usable("a red fox in snow", "a dog on a beach", set())  # lost the subject
    assert not usable("a cat", "A cat!", set())  # the same prompt
    kept, n = merge("a cat", ["a cat sitting", "a cat sitting", "a spaceship", "a cat asleep"], 4)
    assert n == 2 and kept[:2] == ["a cat sitting", "a cat asleep"] and len(set(kept)) == 4


async def test_llm_variations_with_a_bounded_schema_and_a_rule_fallback(open_store, tmp_path) -> None:
    store = await open_store()
    llm = ScriptedChatModel([GOOD, "not json at all", {"variations": ["a dog", "a cat", "a cat"]}])
    env = await seed_env(store, make_settings(tmp_path), llm=llm)
    who = Requester(ALICE, GUILD)
    p = await variations.propose(env.services, who, "a  cat", 3)
    assert (p.prompt, p.variations, p.source) == ("a cat", GOOD["variations"], "llm")
    arr = llm.schemas[0]["properties"]["variations"]
    assert arr["minItems"] == arr["maxItems"] == 3 and arr["items"]["pattern"].startswith("^[A-Za-z]")
    assert "3 different variations" in llm.calls[0][0]["content"]
    bad = await variations.propose(env.services, who, "a cat", 3)
    assert bad.source == "rules" and bad.variations == rule_variations("a cat", 3)
    unusable = await variations.propose(env.services, who, "a cat", 3)
    assert unusable.source == "rules" and len(set(unusable.variations)) == 3
    no_llm = ToolServices(env.store, env.jobs, env.settings)
    assert (await variations.propose(no_llm, who, "a cat", 2)).source == "rules"
    with pytest.raises(UserError, match="2 to 8"):
        await variations.propose(no_llm, who, "a cat", 9)
    await env.store.settings.update("guild", GUILD, tools={"generate": {"enabled": False}})
    with pytest.raises(UserError, match="disabled"):
        await variations.propose(no_llm, who, "a cat", 2)


def test_the_message_carries_the_prompts_back() -> None:
    p = variations.Proposal("a cat", ["a cat, sitting", "a cat, sleeping"], "rules")
    text = variations.variations_text(p)
    assert "“a cat”" in text and "by rules" in text
    assert variations.prompts_from_text(text) == p.variations
    with pytest.raises(UserError, match="no prompt variations"):
        variations.prompts_from_text("hello")


class _Agent(ScriptedAgent):
    def __init__(self, services: ToolServices):
        super().__init__()
        self.orchestrator = Orchestrator(services)


async def test_discord_variations_then_generate_all_queues_one_job_each(tmp_path, monkeypatch) -> None:
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake, s = env.fake, env.services
        env.bot.agent = _Agent(ToolServices(s.store, s.jobs, s.settings, llm=ScriptedChatModel([GOOD])))
        slash = fake.slash("variations", prompt="a cat", count=3)
        await env.send("INTERACTION_CREATE", slash)
        tok = slash["token"]
        [edit] = await fake.wait_for(lambda: fake.find("PATCH", rf"{tok}/messages/@original"), what="proposal")
        assert "**1.** a cat sitting on a rug" in edit.body["content"]
        alice = int(fake.alice["id"])
        [[button]] = [[c["custom_id"] for c in row["components"]] for row in edit.body["components"]]
        assert button == f"atelier:va:{alice}:"
        message = fake.messages[fake.originals[tok]]
        theirs = fake.click(message, button, who=fake.bob)
        await env.send("INTERACTION_CREATE", theirs)
        cb = await fake.wait_for(lambda: fake.find("POST", rf"{theirs['token']}/callback"), what="refusal")
        assert "only the person who asked" in cb[0].body["data"]["content"]
        click = fake.click(message, button)
        await env.send("INTERACTION_CREATE", click)
        done = await fake.wait_for(lambda: fake.find("POST", rf"webhooks/\d+/{click['token']}$"), what="queued")
        assert "Queued 3 of 3 variations" in done[0].body["content"]
        jobs = [await s.jobs.require(i) for i in (1, 2, 3)]
        assert [j.payload["prompt"] for j in jobs] == GOOD["variations"]
        assert all(j.user_id == alice for j in jobs)
        assert await s.jobs.get(4) is None
        assert fake.find("PATCH", rf"/messages/{message['id']}")  # the button is removed once approved


async def test_terminal_variations_and_go(tmp_path, monkeypatch) -> None:
    async with running_env(tmp_path, monkeypatch) as env:
        s = env.services
        agent = _Agent(ToolServices(s.store, s.jobs, s.settings, llm=ScriptedChatModel([GOOD])))
        chat = TerminalChat(s, agent, user_id=ALICE, job_timeout_s=30)  # type: ignore[arg-type]
        with pytest.raises(UserError, match="nothing to generate"):
            await chat.command("/go")
        shown = await chat.command("/variations a cat 3")
        assert "**3.** a cat chasing a red ball" in shown and "/go" in shown
        out = await chat.command("/go")
        assert out.startswith("Queued 3 of 3 variations")
        assert [(await s.jobs.require(i)).payload["prompt"] for i in (1, 2, 3)] == GOOD["variations"]
        assert [(await s.jobs.require(i)).state for i in (1, 2, 3)] == ["done"] * 3
        assert "/variations PROMPT [N]" in await chat.command("/help")


async def test_real_smollm2_variations_are_usable(open_store, tmp_path) -> None:
    from engine.runtime.llm.llama_model import LlamaModel
    from tests.test_llm_llama import PRESET

    model = LlamaModel(PRESET, max_tokens=128)
    model.load("cpu")
    try:
        store = await open_store()
        env = await seed_env(store, make_settings(tmp_path), llm=model)
        p = await variations.propose(env.services, Requester(ALICE), "a cat", 4)
    finally:
        model.close()
    assert len(p.variations) == len(set(p.variations)) == 4
    assert all("cat" in v.lower() for v in p.variations)
    assert p.source in ("llm", "llm+rules", "rules")
