"""The REST API through httpx against the real app on uvicorn, with a real demo Engine (tiny models)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from bot.web.auth import RateLimiter
from engine.config import Web
from tests.web_support import GUILD, A, B, png_bytes, read_events, serving, web_settings


@pytest.fixture
def settings(tmp_path: Path, tiny_models_dir: Path):
    return web_settings(tmp_path, tiny_models_dir)


def error_of(resp) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


async def test_auth_failures_answer_401_and_403_with_the_json_envelope(settings):
    async with serving(settings, worker=False) as site:
        c = site.client
        r = await c.get("/v1/history")
        assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        r = await c.get("/v1/history", headers={"Authorization": "Bearer atl_not-a-key"})
        assert r.status_code == 401 and error_of(r)["message"] == "unknown API key"
        r = await c.get("/v1/history", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert r.status_code == 401

        h = await site.key(A)
        assert (await c.get("/v1/history", headers=h)).status_code == 200
        key_id = (await site.engine.store.apikeys.list(A))[0].id
        assert await site.engine.store.apikeys.revoke(key_id, A)
        r = await c.post("/v1/generations", json={"prompt": "x"}, headers=h)
        assert r.status_code == 403 and error_of(r)["code"] == "key_revoked"

        # a guild that turned the API off (its tool policy), and one that disabled generating
        g = await site.key(B, GUILD)
        await site.engine.store.settings.update("guild", GUILD, tools={"generate": {"enabled": False}})
        r = await c.post("/v1/generations", json={"prompt": "a cat"}, headers=g)
        assert r.status_code == 403 and "generate tool is disabled" in error_of(r)["message"]
        await site.engine.store.settings.update("guild", GUILD, tools={"api": {"enabled": False}})
        r = await c.get("/v1/presets", headers=g)
        assert r.status_code == 403 and error_of(r)["code"] == "forbidden"

        assert error_of(await c.get("/v1/nowhere"))["code"] == "not_found"
        r = await c.post("/v1/generations", json={"prompt": "x", "bogus": 1}, headers=await site.key(A))
        assert r.status_code == 422 and "bogus" in error_of(r)["message"]
        assert "access-control-allow-origin" not in r.headers  # CORS is off by default


async def test_rate_limit_and_daily_quota_answer_429(settings):
    async with serving(settings, worker=False) as site:
        c, h, other = site.client, await site.key(A), await site.key(B)
        site.app.state.limiter = RateLimiter(Web(rate_burst=3, rate_per_minute=1))
        codes = [(await c.get("/v1/styles", headers=h)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await c.get("/v1/styles", headers=h)
        assert error_of(r)["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        assert (await c.get("/v1/styles", headers=other)).status_code == 200  # buckets are per key

        site.app.state.limiter = RateLimiter(Web())
        quota = settings.queue.daily_quota
        for i in range(quota):
            r = await c.post("/v1/generations", json={"prompt": f"cat {i}"}, headers=other)
            assert r.status_code == 202, r.text
        second_key = await site.key(B)  # the owner's quota is shared by every key of theirs
        r = await c.post("/v1/generations", json={"prompt": "one more"}, headers=second_key)
        assert r.status_code == 429 and error_of(r)["code"] == "quota_exceeded"
        assert f"{quota} jobs" in error_of(r)["message"]


async def test_bad_uploads_get_400_with_the_decoders_message(settings):
    async with serving(settings, worker=False) as site:
        c, h = site.client, await site.key(A)
        files = {"image": ("notes.txt", b"this is not an image", "text/plain")}
        r = await c.post("/v1/generations", data={"prompt": "a cat"}, files=files, headers=h)
        assert r.status_code == 400 and error_of(r)["message"].startswith("image: notes.txt was refused")

        big = b"\x89PNG" + b"\0" * settings.images.max_input_bytes
        r = await c.post("/v1/generations", data={"prompt": "a cat"},
                         files={"control_image": ("big.png", big, "image/png")}, headers=h)  # fmt: skip
        assert (
            r.status_code == 400
            and "control_image: big.png is 0.1 MB; images up to" in error_of(r)["message"]
        )

        r = await c.post("/v1/generations", json={"prompt": "a cat", "reference_image": "@@@"}, headers=h)
        assert r.status_code == 400 and "not valid base64" in error_of(r)["message"]
        r = await c.post("/v1/generations", json={"prompt": "a cat", "control_type": "canny"}, headers=h)
        assert r.status_code == 400 and "needs a control_image" in error_of(r)["message"]
        r = await c.post(
            "/v1/generations", data={"prompt": "x"}, files={"mask": ("m.png", png_bytes())}, headers=h
        )
        assert r.status_code == 400 and "unexpected file field 'mask'" in error_of(r)["message"]
        r = await c.post(
            "/v1/generations", json={"prompt": "a cat", "callback_url": "file:///etc/passwd"}, headers=h
        )
        assert r.status_code == 400 and "callback_url" in error_of(r)["message"]
        huge = b"x" * (3 * settings.images.max_input_bytes + (2 << 20))
        r = await c.post("/v1/generations", content=huge, headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 413 and error_of(r)["code"] == "too_large"
        assert await site.engine.jobs.counts() == {**await site.engine.jobs.counts(), "queued": 0}


async def test_uploads_become_the_same_payload_as_imagine(settings):
    async with serving(settings, worker=False) as site:
        c, h = site.client, await site.key(A)
        files = {
            "image": ("in.png", png_bytes(), "image/png"),
            "control_image": ("pose.png", png_bytes(), "image/png"),
        }
        data = {
            "prompt": "  a red fox ",
            "count": "2",
            "seed": "7",
            "control_type": "canny",
            "control_scale": "0.5",
        }
        r = await c.post("/v1/generations", data=data, files=files, headers=h)
        assert r.status_code == 202, r.text
        job = await site.engine.jobs.require(r.json()["job_id"])
        uploads = site.engine.settings.path("outputs") / "uploads"
        assert job.payload["prompt"] == "a red fox" and job.payload["count"] == 2 and job.payload["seed"] == 7
        assert Path(job.payload["source_image"]).parent == uploads
        assert job.payload["controls"][0]["type"] == "canny" and job.payload["controls"][0]["scale"] == 0.5
        assert (job.user_id, job.guild_id) == (A, 0)  # identity from the key, never from the body

        b64 = base64.b64encode(png_bytes(color=(0, 0, 255))).decode()
        r = await c.post("/v1/generations", json={"prompt": "fox", "reference_image": b64}, headers=h)
        job = await site.engine.jobs.require(r.json()["job_id"])
        assert Path(job.payload["reference_image"]).parent == uploads
        r = await c.post("/v1/generations", json={"prompt": "fox", "user_id": B}, headers=h)
        assert r.status_code == 422


async def test_fts_injection_strings_never_crash_and_never_leak(settings):
    async with serving(settings, worker=False) as site:
        c, h = site.client, await site.key(A)
        hist = site.engine.store.history
        for user, word in ((A, "mine"), (B, "theirs")):
            for i in range(3):
                await hist.add(
                    user_id=user, guild_id=GUILD, prompt=f"cat {word} {i} NEAR star", seed=i, images=[]
                )
        for q in ['"', "NEAR(", "*", "prompt:cat", "user_id:202", 'cat" OR "theirs', "cat OR theirs", "NEAR(cat star)",
                  "(", "'; DROP TABLE generations; --", "^cat", "cat -mine", "\x00cat"]:  # fmt: skip
            r = await c.get("/v1/history", params={"q": q}, headers=h)
            assert r.status_code == 200, (q, r.text)
            assert all("mine" in g["prompt"] for g in r.json()["items"]), q
        r = await c.get("/v1/history", params={"q": "cat"}, headers=h)
        assert len(r.json()["items"]) == 3
        r = await c.get("/v1/history", params={"q": "x" * 2000}, headers=h)
        assert r.status_code == 400 and error_of(r)["code"] == "bad_query"
        r = await c.get("/v1/history", params={"q": "cat", "cursor": "garbage"}, headers=h)
        assert r.status_code == 400
        assert await hist.count() == 6


async def test_sse_orders_queued_progress_then_done(settings):
    async with serving(settings, worker=False) as site:
        c, h = site.client, await site.key(A)
        r = await c.post("/v1/generations", json={"prompt": "a lighthouse"}, headers=h)
        body = r.json()
        assert r.status_code == 202 and body["events_url"].endswith(f"/v1/jobs/{body['job_id']}/events")
        events: list[tuple[str, dict]] = []
        async with c.stream("GET", body["events_url"], headers=h) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for name, data in read_events(resp):
                events.append((name, json.loads(data)))
                if name == "queued":
                    await site.engine.runner.start()  # the job starts only once we saw it queued
        names = [n for n, _ in events]
        assert names[0] == "queued" and events[0][1]["position"] == 1
        assert names[1] == "running" and names[-1] == "done" and names.count("done") == 1
        steps = [d["percent"] for n, d in events if n == "progress"]
        assert steps and steps == sorted(steps) and steps[-1] == 100
        assert any("preview" in d and d["preview"].startswith("data:image/jpeg;base64,") for n, d in events)
        final = events[-1][1]
        assert final["state"] == "done" and final["result"]["images"][0].endswith(
            f"/v1/generations/{final['result']['generation_id']}/image/0"
        )
        async with c.stream("GET", body["events_url"], headers=h) as resp:  # a finished job: its final event
            assert [n async for n, _ in read_events(resp)] == ["done"]
        r = await c.get(body["events_url"], headers=await site.key(B))
        assert r.status_code == 404


async def test_cancel_via_delete_and_job_status(settings):
    async with serving(settings, worker=False) as site:
        c, h = site.client, await site.key(A)
        ids = [
            (await c.post("/v1/generations", json={"prompt": f"p{i}"}, headers=h)).json()["job_id"]
            for i in range(2)
        ]
        r = await c.get(f"/v1/jobs/{ids[1]}", headers=h)
        assert r.json()["state"] == "queued" and r.json()["position"] == 2 and r.json()["result"] is None
        assert (await c.delete(f"/v1/jobs/{ids[0]}", headers=await site.key(B))).status_code == 404
        r = await c.delete(f"/v1/jobs/{ids[0]}", headers=h)
        assert r.status_code == 200 and r.json() == {"job_id": ids[0], "outcome": "cancelled"}
        assert (await c.get(f"/v1/jobs/{ids[0]}", headers=h)).json()["state"] == "cancelled"
        assert (await c.get(f"/v1/jobs/{ids[1]}", headers=h)).json()["position"] == 1
        r = await c.delete(f"/v1/jobs/{ids[0]}", headers=h)
        assert r.status_code == 409 and "already cancelled" in error_of(r)["message"]
        assert (await c.get("/v1/jobs/999", headers=h)).status_code == 404


async def test_generation_images_lineage_favorites_presets_styles(settings):
    async with serving(settings) as site:
        c, h = site.client, await site.key(A, GUILD)
        job_id = (await c.post("/v1/generations", json={"prompt": "a tower", "seed": 5}, headers=h)).json()[
            "job_id"
        ]
        job = await site.engine.wait(job_id, 120)
        assert job.state == "done", job.error
        resp = await c.get(f"/v1/jobs/{job_id}", headers=h)
        status, gen_id = resp.json(), resp.json()["result"]["generation_id"]
        assert status["result"]["seeds"] == [5] and str(settings.path("outputs")) not in resp.text  # no paths
        img = await c.get(status["result"]["images"][0], headers=h)
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert img.content == Path(job.result["images"][0]).read_bytes()
        child = await site.engine.store.history.add(user_id=A, guild_id=GUILD, prompt="a tower, closer", seed=6,
                                                    images=[], parent_id=gen_id)  # fmt: skip
        g = (await c.get(f"/v1/generations/{gen_id}", headers=h)).json()
        assert g["seed"] == 5 and g["params"]["steps"] and [x["id"] for x in g["children"]] == [child]
        assert (await c.get(f"/v1/generations/{child}", headers=h)).json()["parent_id"] == gen_id
        for bad in (f"/v1/generations/{gen_id}/image/1", f"/v1/generations/{gen_id}/image/-1",
                    "/v1/generations/999/image/0", f"/v1/generations/{gen_id}/image/..%2F..%2Fatelier.db"):  # fmt: skip
            assert (await c.get(bad, headers=h)).status_code in (404, 422), bad
        other = await site.key(B)
        assert (await c.get(f"/v1/generations/{gen_id}", headers=other)).status_code == 404
        assert (await c.post(f"/v1/generations/{gen_id}/favorite", headers=other)).status_code == 404
        assert (await c.post(f"/v1/generations/{gen_id}/favorite", headers=h)).json()["favorite"] is True
        hist = (await c.get("/v1/history", params={"q": "tower"}, headers=h)).json()["items"]
        assert {x["id"]: x["favorite"] for x in hist} == {gen_id: True, child: False}
        assert (await c.delete(f"/v1/generations/{gen_id}/favorite", headers=h)).json()["favorite"] is False
        presets = (await c.get("/v1/presets", headers=h)).json()
        assert presets["default"] == "demo" and any(p["name"] == "demo" for p in presets["items"])
        styles = (await c.get("/v1/styles", headers=h)).json()["items"]
        assert styles and all({"label", "template"} <= set(s) for s in styles)
        assert (await c.get("/openapi.json")).json()["paths"]["/v1/generations"]["post"]["requestBody"]
        assert (await c.get("/docs")).status_code == 200


async def test_agent_turn_without_an_agent_is_503_and_validates(settings):
    async with serving(settings, worker=False) as site:
        c, h = site.client, await site.key(A)
        r = await c.post("/v1/agent", json={"text": "draw a cat"}, headers=h)
        assert r.status_code == 503 and error_of(r)["code"] == "unavailable"
        r = await c.post("/v1/agent", json={"text": ""}, headers=h)
        assert r.status_code == 422


async def test_agent_turn_runs_the_real_agent(settings):
    async with serving(settings, with_agent=True) as site:
        post = site.client.post("/v1/agent", json={"text": "hello there"}, headers=await site.key(A))
        r = await asyncio.wait_for(post, 180)
        assert r.status_code == 200, r.text
        out = r.json()
        assert set(out) == {"reply", "tool_calls", "jobs", "follow_ups"} and out["reply"]
        turns = await site.engine.store.db.fetchall("SELECT user_id, request FROM agent_turns")
        assert [(t["user_id"], t["request"]) for t in turns] == [(A, "hello there")]
