"""Tools layer: registry schemas, whitelist and the orchestrator's gates, against a real temp Store."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, ValidationError

from engine.runtime.diffusion.request import PROMPT_MAX_CHARS
from engine.runtime.llm import grammar_for
from tests.agent_support import BOB, CHOICES, make_settings, seed_env
from tools.context import ToolContext
from tools.orchestrator import Orchestrator
from tools.registry import Choices, DuplicateTool, Registry, ToolDefinitionError, parse_docstring
from tools.whitelist import REGISTRY, WHITELIST

# ---- registry ---------------------------------------------------------------------------------------


def test_whitelist_is_explicit_and_ordered():
    assert REGISTRY.names == ("generate", "apply_style", "search_history", "enhance_prompt", "critique", "describe")
    assert len(WHITELIST) == len(REGISTRY.names)
    assert "reply" not in REGISTRY and "delete_history" not in REGISTRY


def test_schema_from_signature_and_docstring_excludes_ctx():
    for spec in REGISTRY.specs:
        schema = spec.args_schema(CHOICES)
        assert "ctx" not in schema["properties"]
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert prop["description"], f"{spec.name}.{name} has no description"
    gen = REGISTRY.get("generate").args_schema(CHOICES)
    assert gen["required"] == ["prompt"]
    assert gen["properties"]["prompt"]["maxLength"] == PROMPT_MAX_CHARS  # the one prompt bound
    style = gen["properties"]["style"]["anyOf"][0]
    assert style["enum"] == ["watercolor", "ink-sketch"]
    assert REGISTRY.get("apply_style").args_schema({"style": ["a-b"]})["properties"]["style"]["enum"] == [
        "a-b"
    ]


def test_action_schema_has_one_variant_per_tool_plus_reply_and_compiles():
    schema = REGISTRY.action_schema(CHOICES)
    consts = [v["properties"]["tool"]["const"] for v in schema["anyOf"]]
    assert consts == [*REGISTRY.names, "reply"]
    assert grammar_for(schema) is grammar_for(schema)


def test_action_model_is_a_discriminated_union():
    model = REGISTRY.action_model(CHOICES)
    ok = model.model_validate({"tool": "generate", "args": {"prompt": "a cat", "style": "watercolor"}}).root
    assert ok.tool == "generate" and ok.args.style == "watercolor"
    assert model.model_validate({"tool": "reply", "text": "hi"}).root.text == "hi"
    bad = [
        {"tool": "delete_history", "args": {}},
        {"tool": "generate", "args": {"prompt": "x", "user_id": 2}},
        {"tool": "generate", "args": {"prompt": "x"}, "user_id": 2},
        {"tool": "generate", "args": {"prompt": "x" * (PROMPT_MAX_CHARS + 1)}},
        {"tool": "reply", "text": ""},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            model.model_validate(data)
    with pytest.raises(ValidationError, match="did you mean watercolor"):
        model.model_validate({"tool": "apply_style", "args": {"prompt": "x", "style": "watercolr"}})


def test_parse_docstring_reads_multiline_args():
    summary, args = parse_docstring(
        """Do a thing.

        Args:
            a: First line
                continues here.
            b: Second.

        Returns:
            nothing
        """
    )
    assert summary == "Do a thing."
    assert args == {"a": "First line continues here.", "b": "Second."}


async def tool_a(ctx: ToolContext, x: Annotated[str, Field(max_length=5)] = "") -> dict:
    """A.

    Args:
        x: An x.
    """
    return {"x": x}


def test_duplicate_names_raise():
    async def tool_a_again(ctx: ToolContext) -> dict:
        """Also A."""
        return {}

    tool_a_again.__name__ = "tool_a"
    with pytest.raises(DuplicateTool, match="tool_a"):
        Registry([tool_a, tool_a_again])


def test_bad_definitions_raise():
    async def undocumented(ctx: ToolContext, x: Annotated[str, Field(max_length=5)]) -> dict:
        """No args section."""
        return {}

    async def unbounded(ctx: ToolContext, x: str) -> dict:
        """Unbounded.

        Args:
            x: Anything.
        """
        return {}

    async def no_ctx(x: Annotated[str, Field(max_length=5)]) -> dict:
        """No ctx.

        Args:
            x: X.
        """
        return {}

    def not_async(ctx: ToolContext) -> dict:
        """Sync."""
        return {}

    async def reply(ctx: ToolContext) -> dict:
        """Reserved name."""
        return {}

    cases = [
        (undocumented, "not described"),
        (unbounded, "unbounded string"),
        (no_ctx, "reserved 'ctx'"),
        (not_async, "async"),
        (reply, "snake_case and not 'reply'"),
    ]
    for func, message in cases:
        with pytest.raises(ToolDefinitionError, match=message):
            Registry([func])


def test_choices_marker_without_names_leaves_plain_bounded_string():
    async def pick(ctx: ToolContext, style: Annotated[str, Choices("style")]) -> dict:
        """Pick.

        Args:
            style: A style.
        """
        return {}

    prop = Registry([pick]).get("pick").args_schema({})["properties"]["style"]
    assert prop == {"description": "A style.", "maxLength": 64, "type": "string"}


# ---- orchestrator gates ----------------------------------------------------------------------------


async def test_unknown_tool_and_extra_args_are_never_run(env):
    orch = Orchestrator(env.services)
    ctx = env.ctx()
    for action in (
        {"tool": "delete_history", "args": {"user_id": BOB}},
        {"tool": "reply", "text": "hi"},
        {"tool": "generate", "args": {"prompt": "cat", "user_id": BOB}},
        {"tool": "generate", "args": {"prompt": "cat"}, "guild_id": 1},
        "generate",
    ):
        call = await orch.execute(ctx, action)
        assert not call.executed and call.error
    assert (await env.jobs.counts())["queued"] == 0
    assert len(orch.log) == 5
    assert "unknown tool 'delete_history'" in orch.log[0].error
    assert "args.user_id: Extra inputs are not permitted" in orch.log[2].error


async def test_guild_role_policy(env):
    await env.store.settings.update(
        "guild",
        77,
        tools={
            "generate": {"deny_roles": [5]},
            "critique": {"enabled": False},
            "search_history": {"allow_roles": [9]},
        },
    )
    orch = Orchestrator(env.services)
    denied = await orch.execute(env.ctx(roles=(5,)), {"tool": "generate", "args": {"prompt": "a cat"}})
    assert not denied.executed and "your role may not use the generate tool" in denied.error
    allowed = await orch.execute(env.ctx(roles=(6,)), {"tool": "generate", "args": {"prompt": "a cat"}})
    assert allowed.ok and allowed.result["job_ids"]
    off = await orch.execute(env.ctx(), {"tool": "critique", "args": {}})
    assert "critique tool is disabled" in off.error and not off.executed
    limited = await orch.execute(env.ctx(roles=(1,)), {"tool": "search_history", "args": {}})
    assert "limited to certain roles" in limited.error
    assert (await orch.execute(env.ctx(roles=(9,)), {"tool": "search_history", "args": {}})).ok
    dm = await orch.execute(env.ctx(guild_id=0, roles=(5,)), {"tool": "generate", "args": {"prompt": "dog"}})
    assert dm.ok


async def test_malformed_policy_denies(env):
    await env.store.settings.update("guild", 77, tools={"generate": "nope"})
    call = await Orchestrator(env.services).execute(env.ctx(), {"tool": "generate", "args": {"prompt": "x"}})
    assert "tool settings are invalid" in call.error and not call.executed


async def test_quota_becomes_error_result(open_store, tmp_path):
    env = await seed_env(await open_store(), make_settings(tmp_path, quota=1))
    orch = Orchestrator(env.services)
    first = await orch.execute(env.ctx(), {"tool": "generate", "args": {"prompt": "one"}})
    second = await orch.execute(env.ctx(), {"tool": "generate", "args": {"prompt": "two"}})
    assert first.ok
    assert second.executed and "used your 1 jobs for the last 24 hours" in second.error
    assert (await env.jobs.counts())["queued"] == 1


async def test_tool_exception_becomes_error_and_recorder_sees_everything(env):
    async def explode(ctx: ToolContext) -> dict:
        """Always fails."""
        raise RuntimeError("secret internals")

    seen = []
    orch = Orchestrator(env.services, Registry([explode]), recorder=lambda ctx, call: seen.append(call.name))
    call = await orch.execute(env.ctx(), {"tool": "explode", "args": {}})
    assert call.executed and call.error == "explode failed unexpectedly (RuntimeError); please try again"
    await orch.execute(env.ctx(), {"tool": "nope", "args": {}})
    assert seen == ["explode", "nope"]


# ---- generate --------------------------------------------------------------------------------------
