"""Tools offered by context (tools/offer.py) and the repair rule for bad optional arguments (tools/repair.py)."""

from __future__ import annotations

from tests.agent_support import ALICE, make_settings, seed_env
from tools.context import Attachment
from tools.offer import offer_for
from tools.orchestrator import Orchestrator
from tools.whitelist import REGISTRY

NAMES = REGISTRY.names
PHOTO = Attachment("me.png", b"\x89PNG fake", "image/png")


def test_critique_and_image_arguments_only_with_an_image():
    plain = offer_for(NAMES, has_image=False, past=False)
    assert "critique" not in plain.tools and "search_history" not in plain.tools
    assert {"generate", "apply_style", "enhance_prompt"} <= set(plain.tools)
    assert {"control", "strength", "outpaint", "source_generation_id"} <= plain.hidden["generate"]
    with_image = offer_for(NAMES, has_image=True, past=False)
    assert "critique" in with_image.tools and not with_image.hidden.get("generate")
    assert "critique" in offer_for(NAMES, has_image=False, past=False, latest_image=True).tools


def test_search_history_only_when_the_request_points_at_the_past():
    past = offer_for(NAMES, has_image=False, past=True)
    assert "search_history" in past.tools
    assert "source_generation_id" not in past.hidden["generate"] and "control" in past.hidden["generate"]


def test_refusals_name_what_is_missing():
    plain = offer_for(NAMES, has_image=False, past=False)
    assert "needs an image" in plain.refuses("critique", {})
    assert "control of generate is not available" in plain.refuses("generate", {"prompt": "x", "control": ["canny"]})
    assert plain.refuses("generate", {"prompt": "x", "control": None}) is None
    assert "does not point at earlier images" in plain.refuses("search_history", {"query": "x"})


async def test_the_orchestrator_enforces_the_offer(open_store, tmp_path):
    env = await seed_env(await open_store(), make_settings(tmp_path))
    orch = Orchestrator(env.services)
    offer = orch.offer(env.ctx(), past=False)
    call = await orch.call(env.ctx(), "generate", {"prompt": "a cat", "strength": 0.5}, offer=offer)
    assert not call.executed and "strength of generate is not available" in call.error
    offer = orch.offer(env.ctx(attachments=(PHOTO,)), past=False)
    assert "critique" in offer.tools


async def test_out_of_range_numbers_are_clamped_and_bad_optional_values_dropped_with_notes(open_store, tmp_path):
    env = await seed_env(await open_store(), make_settings(tmp_path))
    orch = Orchestrator(env.services)
    args = {"prompt": "a cat", "count": 6, "seed": -3, "aspect": "21:9", "style": "watercolour"}
    call = await orch.call(env.ctx(), "generate", args)
    assert call.ok, call.result
    assert call.args["count"] == 4 and call.args["seed"] is None and call.args["aspect"] is None
    assert call.args["style"] is None
    notes = " | ".join(call.result["notes"])
    assert "count 6 is out of range; used 4" in notes and "left out seed -3" in notes
    assert "left out aspect '21:9'" in notes and "did you mean watercolor" in notes
    job = await env.jobs.get(call.result["job_ids"][0])
    assert job.payload["count"] == 4 and job.payload["aspect"] is None and job.user_id == ALICE


async def test_a_bad_required_or_unknown_argument_still_rejects_the_call(open_store, tmp_path):
    env = await seed_env(await open_store(), make_settings(tmp_path))
    orch = Orchestrator(env.services)
    empty = await orch.call(env.ctx(), "generate", {"prompt": "", "count": 9})
    assert not empty.executed and "args.prompt" in empty.error
    extra = await orch.call(env.ctx(), "generate", {"prompt": "a cat", "user_id": 5})
    assert not extra.executed and "user_id" in extra.error
    assert (await env.jobs.counts()).get("queued", 0) == 0
