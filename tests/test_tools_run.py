"""The whitelisted tools at work: generate, apply_style, search_history, enhance_prompt and critique."""

from __future__ import annotations

import pytest
from PIL import Image

from engine.images import decode_data_uri
from engine.store.library import UnknownEntry
from tests.agent_support import ALICE, BOB, FakeJobWaiter, png_bytes
from tests.llm_fakes import ScriptedChatModel
from tools.context import Attachment
from tools.orchestrator import Orchestrator
from tools.search_history import search_history

# ---- registry ---------------------------------------------------------------------------------------


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
        "seed_fixed": True,  # the request named its seed: only then may the result cache answer
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
