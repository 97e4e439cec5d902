"""Tools layer: registry schemas, whitelist, orchestrator gates and each tool against a real temp Store."""

from __future__ import annotations

import io
from typing import Annotated

import pytest
from PIL import Image
from pydantic import Field, ValidationError

from engine.images import decode_data_uri
from engine.llm import ScriptedChatModel, grammar_for
from engine.store.library import UnknownEntry
from tests.agent_support import ALICE, BOB, FakeJobWaiter, make_settings, seed_env
from tools.context import Attachment, ToolContext
from tools.orchestrator import Orchestrator
from tools.registry import Choices, DuplicateTool, Registry, ToolDefinitionError, parse_docstring
from tools.search_history import search_history
from tools.whitelist import REGISTRY, WHITELIST

CHOICES = {"style": ["watercolor", "ink-sketch"], "preset": ["sd15", "sdxl"]}


@pytest.fixture
async def env(open_store, tmp_path):
    store = await open_store()
    return await seed_env(store, make_settings(tmp_path))


def png_bytes(color=(10, 20, 30), size=(40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


# ---- registry ---------------------------------------------------------------------------------------


def test_whitelist_is_explicit_and_ordered():
    assert REGISTRY.names == ("generate", "apply_style", "search_history", "enhance_prompt", "critique")
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
    assert gen["properties"]["prompt"]["maxLength"] == 1000
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
        {"tool": "generate", "args": {"prompt": "x" * 1001}},
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


async def test_generate_enqueues_job_with_payload(env):
    orch = Orchestrator(env.services)
    args = {
        "prompt": " a cat ",
        "style": "watercolor",
        "aspect": "16:9",
        "count": 2,
        "seed": 5,
        "preset": "sdxl",
    }
    call = await orch.execute(env.ctx(reply_to={"message_id": 9}), {"tool": "generate", "args": args})
    assert call.ok, call.result
    (job_id,) = call.result["job_ids"]
    assert call.result["queue_position"] == 1
    job = await env.jobs.get(job_id)
    assert (job.kind, job.user_id, job.guild_id, job.channel_id, job.reply_to) == (
        "generate",
        ALICE,
        77,
        5,
        {"message_id": 9},
    )
    assert job.payload == {
        "prompt": "a cat",
        "negative": None,
        "preset": "sdxl",
        "style": "watercolor",
        "aspect": "16:9",
        "count": 2,
        "seed": 5,
        "strength": None,
        "source_generation_id": None,
    }


async def test_generate_drops_unknown_names_with_close_matches_and_clamps_counts(env):
    orch = Orchestrator(env.services)
    call = await orch.execute(env.ctx(), {"tool": "generate", "args": {"prompt": "x", "preset": "sd51"}})
    assert call.ok and call.args["preset"] is None  # an optional value: dropped, and the note says so
    assert "unknown preset 'sd51'; did you mean sd15" in call.result["notes"][0]
    too_many = await orch.execute(env.ctx(), {"tool": "generate", "args": {"prompt": "x", "count": 9}})
    assert too_many.ok and too_many.args["count"] == 4 and "count 9 is out of range" in too_many.result["notes"][0]
    empty = await orch.execute(env.ctx(), {"tool": "generate", "args": {"prompt": ""}})
    assert not empty.executed and "args.prompt" in empty.error  # a required one still rejects the call


async def test_generate_reuses_source_seed_and_params(env):
    orch = Orchestrator(env.services)
    src = env.alice_ids[2]  # lighthouse, seed 333, sdxl, cinematic, aspect 16:9
    call = await orch.execute(
        env.ctx(), {"tool": "generate", "args": {"prompt": "lighthouse at dawn", "source_generation_id": src}}
    )
    assert call.ok and call.result["mode"] == "txt2img"
    payload = (await env.jobs.get(call.result["job_ids"][0])).payload
    assert (payload["seed"], payload["preset"], payload["style"], payload["aspect"]) == (
        333,
        "sdxl",
        "cinematic",
        "16:9",
    )
    assert payload["source_generation_id"] is None and payload["strength"] is None and payload["steps"] == 20
    assert call.result["based_on"] == src
    img2img = await orch.execute(
        env.ctx(replied_generation_id=src),
        {"tool": "generate", "args": {"prompt": "darker", "strength": 0.4}},
    )
    payload = (await env.jobs.get(img2img.result["job_ids"][0])).payload
    assert payload["source_generation_id"] == src and payload["strength"] == 0.4 and payload["seed"] == 333


async def test_generate_cannot_use_another_users_generation_unless_replied_to(env):
    orch = Orchestrator(env.services)
    bob_gen = env.bob_ids[0]
    args = {"prompt": "mine now", "source_generation_id": bob_gen}
    denied = await orch.execute(env.ctx(), {"tool": "generate", "args": args})
    assert f"no generation #{bob_gen} that you can use" in denied.error
    replied = await orch.execute(env.ctx(replied_generation_id=bob_gen), {"tool": "generate", "args": args})
    assert replied.ok and (await env.jobs.get(replied.result["job_ids"][0])).payload["seed"] == 999


async def test_generate_img2img_from_attachment(env):
    orch = Orchestrator(env.services)
    none = await orch.execute(env.ctx(), {"tool": "generate", "args": {"prompt": "x", "strength": 0.5}})
    assert "strength needs a source image" in none.error
    att = Attachment("photo.png", png_bytes())
    call = await orch.execute(
        env.ctx(attachments=(att,)), {"tool": "generate", "args": {"prompt": "x", "strength": 0.5}}
    )
    assert call.ok and call.result["mode"] == "img2img"
    path = (await env.jobs.get(call.result["job_ids"][0])).payload["source_image"]
    assert Image.open(path).size == (40, 20)
    bad = Attachment("evil.png", b"<svg>not an image</svg>")
    call = await orch.execute(
        env.ctx(attachments=(bad,)), {"tool": "generate", "args": {"prompt": "x", "strength": 0.5}}
    )
    assert "not an image" in call.error


# ---- apply_style / search_history ------------------------------------------------------------------


async def test_apply_style_merges_template_and_negative(env):
    orch = Orchestrator(env.services)
    call = await orch.execute(
        env.ctx(),
        {
            "tool": "apply_style",
            "args": {"prompt": "a fox", "style": "watercolor", "negative": "photo, text"},
        },
    )
    assert call.result["prompt"].startswith("a fox, loose watercolor painting")
    assert call.result["negative"] == "photo, text, 3d render, hard outlines, oversaturated"
    bad = await orch.execute(
        env.ctx(), {"tool": "apply_style", "args": {"prompt": "a fox", "style": "watercolour"}}
    )
    assert "unknown style 'watercolour'; did you mean watercolor" in bad.error
    from tools.apply_style import apply_style

    with pytest.raises(UnknownEntry, match="Did you mean: watercolor"):
        await apply_style(env.ctx(), "a fox", "watercolr")


async def test_search_history_is_scoped_to_the_requester(env):
    alice = await search_history(env.ctx(), "blue robot")
    assert [r["id"] for r in alice["results"]] == [env.alice_ids[0]]
    assert alice["results"][0]["seed"] == 111 and alice["results"][0]["thumbnail"] == "alice/0.png"
    bob = await search_history(env.ctx(BOB), "blue robot")
    assert [r["id"] for r in bob["results"]] == [env.bob_ids[0]]
    recent = await search_history(env.ctx(), "", limit=10)
    assert sorted(r["id"] for r in recent["results"]) == sorted(env.alice_ids)
    orch = Orchestrator(env.services)
    bad = await orch.execute(env.ctx(), {"tool": "search_history", "args": {"query": " ".join(["w"] * 40)}})
    assert "use at most 32" in bad.error


async def test_search_falls_back_to_any_word_by_stem_with_a_note(env):
    strict = await search_history(env.ctx(), "blue robot")
    assert "notes" not in strict
    loose = await search_history(env.ctx(), "robots somewhere sunny")  # no image has every word; "robots" ~ robot
    assert [r["id"] for r in loose["results"]] == [env.alice_ids[0]]
    assert loose["notes"] == ["no image has all of these words; these have some of them"]
    bob = await search_history(env.ctx(BOB), "robots castle")  # still only Bob's own
    assert {r["id"] for r in bob["results"]} == set(env.bob_ids)
    none = await search_history(env.ctx(), "zeppelin")
    assert none["results"] == [] and "notes" not in none


# ---- enhance_prompt ---------------------------------------------------------------------------------


async def test_enhance_uses_llm_output_when_usable(env):
    llm = ScriptedChatModel([{"prompt": "red fox in deep snow, soft light", "changes": ["added lighting"]}])
    env.services.llm = llm
    call = await Orchestrator(env.services).execute(
        env.ctx(), {"tool": "enhance_prompt", "args": {"prompt": "red fox in snow"}}
    )
    assert call.result == {
        "prompt": "red fox in deep snow, soft light",
        "changes": ["added lighting"],
        "family": "sd15",
        "source": "llm",
    }
    assert "sd15" in llm.calls[0][0]["content"] and llm.schemas[0]["required"] == ["prompt", "changes"]


@pytest.mark.parametrize(
    "output",
    [
        {"prompt": "a spaceship", "changes": []},  # dropped the user's words
        {"prompt": "Red fox in snow, red fox in snow", "changes": ["nothing"]},  # no change
        '{"prompt": "cut off',  # invalid JSON
        {"prompt": "red fox", "changes": "x"},  # wrong shape
    ],
)
async def test_enhance_falls_back_to_rules(env, output):
    env.services.llm = ScriptedChatModel([output])
    call = await Orchestrator(env.services).execute(
        env.ctx(), {"tool": "enhance_prompt", "args": {"prompt": "red fox in snow,  red fox in snow"}}
    )
    assert call.result["source"] == "rules"
    assert call.result["prompt"] == "red fox in snow, highly detailed, sharp focus, soft lighting"
    assert "removed repeated 'red fox in snow'" in call.result["changes"]


async def test_enhance_rules_for_flux_without_llm(env):
    await env.store.presets.save("image", "fluxy", {"model": "m", "family": "flux"})
    call = await Orchestrator(env.services).execute(
        env.ctx(),
        {"tool": "enhance_prompt", "args": {"prompt": "a quiet harbour at dusk", "preset": "fluxy"}},
    )
    assert call.result["prompt"] == "A quiet harbour at dusk. The image is sharp and well lit."
    assert call.result["family"] == "flux" and call.result["source"] == "rules"


# ---- critique ----------------------------------------------------------------------------------------

CRITIQUE = {
    "critique": ["Moody and clear."],
    "matches_prompt": False,
    "fixes": {
        "prompt_add": ["rim light"],
        "prompt_remove": [],
        "negative_add": ["blur"],
        "strength": 0.4,
        "style": "cinematic",
    },
}


def image_of(call_messages) -> Image.Image:
    (part,) = [p for p in call_messages[-1]["content"] if p["type"] == "image_url"]
    return decode_data_uri(part["image_url"]["url"])


async def test_critique_without_vision_projector_says_so(env):
    call = await Orchestrator(env.services).execute(env.ctx(), {"tool": "critique", "args": {}})
    assert call.executed
    assert call.error.startswith(
        "critique needs a vision model, but the LLM preset 'smollm2-135m' has no vision projector"
    )


async def test_critique_sources_and_structured_fixes(env):
    vision = ScriptedChatModel([CRITIQUE] * 4)
    env.services.vision = vision
    orch = Orchestrator(env.services)
    latest = await orch.execute(env.ctx(), {"tool": "critique", "args": {}})
    assert latest.result["generation_id"] == env.alice_ids[-1]
    assert latest.result["fixes"]["strength"] == 0.4 and latest.result["matches_prompt"] is False
    assert "lighthouse at night" in vision.calls[0][0]["content"]
    assert image_of(vision.calls[0]).getpixel((1, 1)) == (40, 40, 120)
    att = Attachment("a.png", png_bytes((1, 250, 3)))
    await orch.execute(env.ctx(attachments=(att,)), {"tool": "critique", "args": {"focus": "colour"}})
    assert (
        image_of(vision.calls[1]).getpixel((1, 1)) == (1, 250, 3)
        and "colour" in vision.calls[1][0]["content"]
    )
    replied = await orch.execute(
        env.ctx(replied_generation_id=env.bob_ids[0]), {"tool": "critique", "args": {}}
    )
    assert replied.result["generation_id"] == env.bob_ids[0]
    other = await orch.execute(env.ctx(), {"tool": "critique", "args": {"generation_id": env.bob_ids[1]}})
    assert "that you can use" in other.error and len(vision.calls) == 3


async def test_critique_waits_for_job_and_rejects_bad_vision_output(env):
    waiter = FakeJobWaiter(env)
    env.services.wait_for_job_hook = waiter
    bad = dict(CRITIQUE, fixes={**CRITIQUE["fixes"], "style": "no-such-style"})
    env.services.vision = ScriptedChatModel([CRITIQUE, bad, "not json"])
    orch = Orchestrator(env.services)
    gen = await orch.execute(env.ctx(), {"tool": "generate", "args": {"prompt": "a cat"}})
    job_id = gen.result["job_ids"][0]
    call = await orch.execute(env.ctx(), {"tool": "critique", "args": {"job_id": job_id}})
    assert waiter.waited == [job_id] and call.ok and call.result["prompt"] == "a cat"
    assert (await orch.execute(env.ctx(BOB), {"tool": "critique", "args": {"job_id": job_id}})).error == (
        f"there is no job #{job_id} of yours"
    )
    assert (
        "unknown style 'no-such-style'"
        in (await orch.execute(env.ctx(), {"tool": "critique", "args": {}})).error
    )
    assert "answer was unusable" in (await orch.execute(env.ctx(), {"tool": "critique", "args": {}})).error
