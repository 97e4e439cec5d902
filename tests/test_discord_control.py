"""Issue 7 on Discord: /imagine control/reference options, /controlmap, zoom/pan buttons, 'use this pose' replies."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.agent import Agent, AgentResult
from engine.runtime.diffusion.errors import ModelNotAvailable
from tests.discord_support import ScriptedAgent, custom_ids, make_settings, posted_ids, running_env
from tests.llm_fakes import ScriptedChatModel
from tests.test_discord_flows import _result_message
from tools.context import Services as ToolServices
from tools.orchestrator import Orchestrator


def _png(size: int = 32, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _shapes(size: int = 64) -> bytes:
    """A white square on black: canny finds its outline."""
    img = Image.new("RGB", (size, size), "black")
    img.paste((255, 255, 255), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def _queued(env, payload) -> None:
    await env.send("INTERACTION_CREATE", payload)
    tok = payload["token"]
    await env.fake.wait_for(lambda: env.fake.find("PATCH", rf"{tok}/messages/@original"), what="queued edit")


async def _error(env, payload) -> dict:
    """Send an interaction that must fail; return the ephemeral error followup body."""
    await env.send("INTERACTION_CREATE", payload)
    tok = payload["token"]
    err = await env.fake.wait_for(
        lambda: env.fake.find("POST", rf"webhooks/\d+/{tok}$"), what="error followup"
    )
    assert err[0].body["flags"] & 64, "the error is not ephemeral"
    return err[0].body


def _upload_ok(env, path: str, size: tuple[int, int]) -> None:
    p = Path(path)
    assert p.is_relative_to(env.services.settings.path("outputs") / "uploads"), path
    assert Image.open(p).size == size


async def test_imagine_control_and_reference_options_become_payload_fields(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake
        ctl = fake.attachment("pose.png", _png(32))
        await _queued(env, fake.slash("imagine", prompt="a knight", control_image=ctl, control_type="openpose",
                                      control_scale=0.7))  # fmt: skip
        job = await env.services.jobs.require(1)
        [entry] = job.payload["controls"]
        assert (entry["type"], entry["scale"]) == ("openpose", 0.7)
        _upload_ok(env, entry["image"], (32, 32))
        assert "reference_image" not in job.payload and job.payload["prompt"] == "a knight"

        await _queued(
            env, fake.slash("imagine", prompt="edges only", control_image=fake.attachment("e.png", _png(24)))
        )
        assert (await env.services.jobs.require(2)).payload["controls"][0] | {"image": ""} == {
            "type": "canny", "scale": 1.0, "image": ""}  # fmt: skip

        ref = fake.attachment("look.png", _png(40, (10, 90, 200)))
        await _queued(env, fake.slash("imagine", prompt="a castle", reference_image=ref, reference_mode="style",
                                      reference_scale=0.9))  # fmt: skip
        job = await env.services.jobs.require(3)
        assert (job.payload["reference_mode"], job.payload["reference_scale"]) == ("style", 0.9)
        _upload_ok(env, job.payload["reference_image"], (40, 40))
        assert "controls" not in job.payload


async def test_imagine_control_option_errors_are_ephemeral_and_name_the_option(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake
        body = await _error(env, fake.slash("imagine", prompt="x", control_type="depth"))
        assert "control_type needs a control_image" in body["content"]
        body = await _error(env, fake.slash("imagine", prompt="x", reference_mode="style"))
        assert "reference_mode needs a reference_image" in body["content"]
        junk = fake.attachment("pose.png", b"this is not a picture")
        body = await _error(env, fake.slash("imagine", prompt="x", control_image=junk))
        assert "control_image" in body["content"] and "not an image" in body["content"]
        huge = fake.attachment("big.png", _png()) | {"size": 50 * 2**20}
        body = await _error(env, fake.slash("imagine", prompt="x", reference_image=huge))
        assert "reference_image: big.png is 50.0 MB" in body["content"]
        assert (await env.services.jobs.counts())["queued"] == 0
        assert not (env.services.settings.path("outputs") / "uploads").exists()


async def test_controlmap_sends_the_canny_map_of_a_small_image(tmp_path, monkeypatch):
    from engine.config import Control
    from engine.runtime.arbiter import Arbiter
    from engine.runtime.models import DemoModels, ModelRegistry

    settings = make_settings(tmp_path).model_copy(update={"control": Control(detect_resolution=64)})
    async with running_env(tmp_path, monkeypatch, settings=settings, start_runner=False) as env:
        fake, services = env.fake, env.services
        services.arbiter = Arbiter(budget_bytes=2**40, device="cpu", probe=lambda: 0)
        services.models = ModelRegistry(
            services.settings, services.arbiter, services.store, DemoModels(tmp_path)
        )
        payload = fake.slash("controlmap", image=fake.attachment("square.png", _shapes(64)), type="canny")
        await env.send("INTERACTION_CREATE", payload)
        tok = payload["token"]
        done = await fake.wait_for(
            lambda: [c for c in fake.find("PATCH", rf"{tok}/messages/@original") if c.files],
            what="control map",
        )
        assert fake.find("POST", rf"{tok}/callback")[0].body["type"] == 5  # deferred first
        name, data = done[-1].files[0]
        assert name == "control-canny.png" and "**canny**" in done[-1].body["content"]
        img = Image.open(io.BytesIO(data)).convert("L")
        assert Image.open(io.BytesIO(data)).format == "PNG" and img.size == (64, 64)
        bright = [(x, y) for y in range(64) for x in range(64) if img.getpixel((x, y)) > 128]
        assert len(bright) >= 100  # the square's outline (perimeter 128 px)...

        def near_border(x: int, y: int) -> bool:
            inside = 13 <= x <= 50 and 13 <= y <= 50
            return inside and (min(abs(x - 16), abs(x - 47)) <= 2 or min(abs(y - 16), abs(y - 47)) <= 2)

        assert all(near_border(x, y) for x, y in bright)  # ...and nothing else
        await services.arbiter.close()


async def test_controlmap_reports_missing_detector_weights_and_bad_uploads(tmp_path, monkeypatch):
    async def no_weights(kind, image):
        raise ModelNotAvailable(f"the {kind} detector needs lllyasviel/Annotators, which is not downloaded")

    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake
        monkeypatch.setattr(env.services, "control_preview", no_weights, raising=False)
        body = await _error(
            env, fake.slash("controlmap", image=fake.attachment("a.png", _png()), type="openpose")
        )
        assert "openpose detector needs lllyasviel/Annotators" in body["content"]
        body = await _error(
            env, fake.slash("controlmap", image=fake.attachment("a.png", b"nope"), type="canny")
        )
        assert "image: a.png was refused" in body["content"]


async def test_zoom_and_pan_buttons_enqueue_outpaint_jobs_for_the_clicker(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        msg, job_id = await _result_message(env, prompt="a lighthouse", count=1)
        source = await env.services.jobs.require(job_id)
        gen = source.result["generation_id"]
        row = next(
            r
            for r in msg["components"]
            if any(c["custom_id"].startswith("atelier:o:") for c in r["components"])
        )
        assert [c["custom_id"] for c in row["components"]] == [
            f"atelier:o:{job_id}:{d}:1" for d in ("all", "left", "right", "up", "down")]  # fmt: skip
        assert row["components"][0]["label"] == "Zoom out"
        patterns = env.bot._connection._view_store._dynamic_items
        assert any(p.fullmatch(f"atelier:o:{job_id}:left:1") for p in patterns)
        for who, direction, factor in ((fake.bob, "left", 1.5), (fake.alice, "all", 2.0)):
            before = len(env.handlers.runs)
            click = fake.click(msg, f"atelier:o:{job_id}:{direction}:1", who=who)
            await env.send("INTERACTION_CREATE", click)
            tok = click["token"]
            ids = await posted_ids(fake, tok, f"{direction} result posted")
            assert fake.find("POST", rf"{tok}/callback")[0].body["type"] == 5
            kind, payload = env.handlers.runs[before]
            assert isinstance(payload.pop("seed"), int)  # the seed is drawn once, at submission
            assert payload.pop("seed_fixed") is False  # drawn, not asked for: the result cache never answers
            assert kind == "generate" and payload == {
                "prompt": "a lighthouse", "source_generation_id": gen, "source_index": 0,
                "outpaint": {"direction": direction, "factor": factor}}  # fmt: skip
            job = (await env.services.jobs.user_jobs(int(who["id"]), ("done",)))[-1]
            assert {k: v for k, v in job.payload.items() if k not in ("seed", "seed_fixed")} == payload
            assert f"atelier:o:{job.id}:all:1" in ids  # zoom again


async def test_multi_image_results_get_one_zoom_pan_menu_within_discord_limits(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        msg, job_id = await _result_message(env, prompt="four cats", count=4)
        rows = msg["components"]
        assert len(rows) <= 5 and sum(len(r["components"]) for r in rows) <= 25
        assert all(len(r["components"]) <= 5 for r in rows)
        [menu] = [c for r in rows for c in r["components"] if c["type"] == 3]
        assert menu["custom_id"] == f"atelier:os:{job_id}" and len(menu["options"]) == 20
        assert {"up:4", "all:1"} <= {o["value"] for o in menu["options"]}
        click = fake.click(msg, f"atelier:os:{job_id}")
        click["data"].update(component_type=3, values=["up:3"])
        before = len(env.handlers.runs)
        await env.send("INTERACTION_CREATE", click)
        await fake.wait_for(lambda: len(env.handlers.runs) > before, what="outpaint job ran")
        gen = (await env.services.jobs.require(job_id)).result["generation_id"]
        assert {k: v for k, v in env.handlers.runs[before][1].items() if k not in ("seed", "seed_fixed")} == {
            "prompt": "four cats", "source_generation_id": gen, "source_index": 2,
            "outpaint": {"direction": "up", "factor": 1.5}}  # fmt: skip
        up = fake.click(msg, f"atelier:u:{job_id}:1")
        await env.send("INTERACTION_CREATE", up)
        ids = await posted_ids(fake, up["token"], "upscale posted")
        assert not [i for i in ids if i.startswith("atelier:o")]  # no zoom of upscales


async def _one_image(env, prompt: str = "a cat") -> tuple[dict, int, int]:
    """Run /imagine for one image: the result message, its job id and its generation id."""
    result, job_id = await _result_message(env, prompt=prompt, count=1)
    return result, job_id, (await env.services.jobs.require(job_id)).result["generation_id"]


def _real_agent(env, script: list) -> object:
    """An agent turn through the real Agent and tools with a scripted model."""

    async def run(turn):
        tools = ToolServices(store=env.services.store, jobs=env.services.jobs, settings=env.services.settings)
        agent = Agent(ScriptedChatModel(list(script)), Orchestrator(tools), env.services.settings)
        return await agent.run(turn)

    return run


async def test_use_this_pose_reply_makes_an_openpose_job_from_the_replied_image(tmp_path, monkeypatch):
    agent = ScriptedAgent()
    script = [{"prompt": "a knight"}]
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        result, job_id, gen = await _one_image(env, "a dancer")
        agent.results.append(_real_agent(env, script))
        await env.send(
            "MESSAGE_CREATE", fake.message(fake.alice, "use this pose", reply_to=int(result["id"]))
        )
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$"), what="agent reply")
        assert sent[0].body["content"].startswith('Drawing "a dancer"')  # no subject given: the replied prompt
        turn = agent.turns[0]
        assert (
            turn.replied_generation_id == gen and turn.attachments == []
        )  # the generation, not its re-upload
        job = next(j for j in await env.services.jobs.user_jobs(int(fake.alice["id"]), ("queued", "running", "done"))
                   if j.payload.get("controls"))  # fmt: skip
        [entry] = job.payload["controls"]
        assert (
            entry["type"] == "openpose"
            and entry.get("source_generation_id") == gen
            and not entry.get("image")
        )

        # an uploaded picture (someone's post), then a mention replying to it
        upload = fake.message(fake.bob, "my photo", attachments=[fake.attachment("me.png", _png(48))])
        agent.results.append(_real_agent(env, script))
        ask = fake.message(fake.alice, f"<@{fake.bot_user['id']}> same pose but a knight",
                           reply_to=int(upload["id"]), mentions=[fake.bot_user])  # fmt: skip
        await env.send("MESSAGE_CREATE", ask)
        await fake.wait_for(lambda: len(agent.turns) == 2 and len(fake.find("POST", r"/channels/\d+/messages$")) >= 3,
                            what="second reply")  # fmt: skip
        assert [a.name for a in agent.turns[1].attachments] == ["me.png"]
        assert agent.turns[1].replied_generation_id is None
        jobs = await env.services.jobs.user_jobs(int(fake.alice["id"]), ("queued", "running", "done"))
        [entry] = [j for j in jobs if j.payload.get("controls")][-1].payload["controls"]
        assert entry["type"] == "openpose"
        _upload_ok(env, entry["image"], (48, 48))


async def test_image_reply_without_an_intent_still_goes_to_critique(tmp_path, monkeypatch):
    agent = ScriptedAgent()
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        result, job_id, gen = await _one_image(env)
        agent.results.append(AgentResult(reply="Nice light.", follow_ups=["warmer colours"]))
        await env.send(
            "MESSAGE_CREATE", fake.message(fake.alice, "what do you think?", reply_to=int(result["id"]))
        )
        sent = await fake.wait_for(lambda: fake.find("POST", r"/channels/\d+/messages$"), what="critique")
        turn = agent.turns[0]
        assert turn.replied_generation_id == gen and [a.name for a in turn.attachments] == [
            f"job{job_id}-0.png"
        ]
        assert custom_ids(sent[0].body["components"]) == [f"atelier:fix:{gen}:1"]


async def test_zoom_out_reply_to_a_critique_finds_the_image_up_the_chain(tmp_path, monkeypatch):
    agent = ScriptedAgent()
    async with running_env(tmp_path, monkeypatch, agent=agent) as env:
        fake = env.fake
        result, job_id, gen = await _one_image(env)
        upload = fake.message(fake.alice, "", attachments=[fake.attachment("mine.png", _png(20))])
        for source in (result, upload):  # the critique of a generation, then of an upload, sits in between
            fixes = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "Fix 1",
                      "custom_id": f"atelier:fix:{gen if source is result else 0}:1"}]}]  # fmt: skip
            critique = fake.message(fake.bot_user, "Flat sky.\n\n**1.** darker sky", components=fixes,
                                    reply_to=int(source["id"]))  # fmt: skip
            agent.results.append(AgentResult(reply="Zooming out."))
            await env.send(
                "MESSAGE_CREATE", fake.message(fake.alice, "zoom out 1.5x", reply_to=int(critique["id"]))
            )
            n = len(agent.turns) + 1
            await fake.wait_for(lambda n=n: len(agent.turns) == n, what="agent turn")
        by_gen, by_upload = agent.turns
        assert (by_gen.replied_generation_id, by_gen.attachments) == (gen, [])
        assert by_upload.replied_generation_id is None
        assert [(a.name, a.data) for a in by_upload.attachments] == [("mine.png", _png(20))]
