"""End-to-end Discord flows through discord.py's real gateway/HTTP code against the fake Discord."""

from __future__ import annotations

import asyncio
import time

from tests.discord_support import custom_ids, posted_ids, running_env


async def test_imagine_defers_then_edits_progress_then_posts_files_and_buttons(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        payload = fake.slash("imagine", prompt="a red fox", count=2, seed=42)
        token = payload["token"]
        sent = time.monotonic()
        await env.send("INTERACTION_CREATE", payload)
        done = await fake.wait_for(
            lambda: [
                c
                for c in fake.find("PATCH", rf"{token}/messages/@original")
                if c.files and c.body.get("components")
            ],
            what="final result edit",
        )
        calls = [c for c in fake.calls if token in c.path]
        assert calls[0].path.endswith("/callback") and calls[0].body["type"] == 5  # defer comes first
        assert calls[0].at - sent < 3.0
        edits = [c for c in calls if c.method == "PATCH"]
        progress = [c for c in edits if "%" in (c.body.get("content") or "")]
        assert progress, "no step % edit was made"
        assert any(c.files and c.files[0][0] == "preview.png" for c in progress), "no preview image was sent"
        assert any("queued" in (c.body.get("content") or "") for c in edits)
        final = done[-1]
        assert [name for name, _ in final.files] == ["job1-0.png", "job1-1.png"]
        ids = custom_ids(final.body["components"])
        assert "atelier:v:1:1" in ids and "atelier:v:1:2" in ids and "atelier:u:1:2" in ids
        assert {"atelier:r:1", "atelier:f:1", "atelier:i:1", "atelier:d:1"} <= set(ids)
        assert "a red fox" in final.body["content"] and "42" in final.body["content"]
        job = await env.services.jobs.require(1)
        assert job.posted and job.payload["seed"] == 42 and job.payload["count"] == 2


async def test_imagine_unknown_style_is_an_ephemeral_specific_error(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        payload = fake.slash("imagine", prompt="x", style="no-such-style")
        await env.send("INTERACTION_CREATE", payload)
        tok = payload["token"]
        err = await fake.wait_for(lambda: fake.find("POST", rf"webhooks/\d+/{tok}$"), what="error followup")
        assert err[0].body["flags"] & 64
        assert "no style named 'no-such-style'" in err[0].body["content"]
        assert fake.find("DELETE", rf"{tok}/messages/@original"), "the public 'thinking' placeholder stayed"
        assert (await env.services.jobs.counts())["queued"] == 0


async def _result_message(env, prompt: str = "a cat", count: int = 2) -> tuple[dict, int]:
    """Run /imagine to completion; return the posted result message payload and its job id."""
    fake = env.fake
    payload = fake.slash("imagine", prompt=prompt, count=count)
    await env.send("INTERACTION_CREATE", payload)
    tok = payload["token"]
    await fake.wait_for(lambda: fake.find("PATCH", rf"{tok}/messages/@original") and fake.messages.get(
        fake.originals.get(tok, -1), {}).get("components"), what="result posted")  # fmt: skip
    msg = fake.messages[fake.originals[tok]]
    job_id = int(custom_ids(msg["components"])[0].split(":")[2])
    return msg, job_id


async def test_variation_button_enqueues_a_variation_job_and_posts_it(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        msg, job_id = await _result_message(env)
        source = await env.services.jobs.require(job_id)
        click = fake.click(msg, f"atelier:v:{job_id}:2", who=fake.bob)
        await env.send("INTERACTION_CREATE", click)
        tok = click["token"]
        cb = await fake.wait_for(lambda: fake.find("POST", rf"{tok}/callback"), what="button ack")
        assert cb[0].body["type"] == 5
        await fake.wait_for(
            lambda: (env.handlers.runs[-1][0] == "variation") if len(env.handlers.runs) > 1 else None
        )
        kind, payload = env.handlers.runs[-1]
        assert isinstance(payload.pop("seed"), int)  # drawn once, at submission
        assert payload == {"generation_id": source.result["generation_id"], "index": 1}
        job = (await env.services.jobs.user_jobs(int(fake.bob["id"]), ("queued", "running", "done")))[-1]
        assert job.kind == "variation"
        ids = await posted_ids(fake, tok, "variation posted")
        assert f"atelier:u:{job.id}:1" in ids and f"atelier:r:{job.id}" not in ids  # no reroll of a variation


async def test_delete_button_is_owner_only(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        msg, job_id = await _result_message(env)
        click = fake.click(msg, f"atelier:d:{job_id}", who=fake.bob)
        await env.send("INTERACTION_CREATE", click)
        cb = await fake.wait_for(lambda: fake.find("POST", rf"{click['token']}/callback"))
        assert cb[0].body["data"]["flags"] & 64 and "only the person" in cb[0].body["data"]["content"]
        assert int(msg["id"]) in fake.messages
        click = fake.click(msg, f"atelier:d:{job_id}", who=fake.alice)
        await env.send("INTERACTION_CREATE", click)
        await fake.wait_for(lambda: int(msg["id"]) not in fake.messages, what="message deleted by owner")
        gen = (await env.services.jobs.require(job_id)).result["generation_id"]
        assert await env.services.store.history.count(int(fake.alice["id"])) == 0, f"generation {gen} kept"


async def test_info_and_favorite_buttons(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        msg, job_id = await _result_message(env, prompt="blue whale")
        click = fake.click(msg, f"atelier:i:{job_id}")
        await env.send("INTERACTION_CREATE", click)
        cb = await fake.wait_for(lambda: fake.find("POST", rf"{click['token']}/callback"))
        assert "blue whale" in cb[0].body["data"]["content"] and "seeds" in cb[0].body["data"]["content"]
        assert "You asked" not in cb[0].body["data"]["content"]  # /imagine: no agent turn to explain
        from engine.store.turns import TurnRecord

        await env.services.store.turns.add(TurnRecord(
            user_id=int(fake.alice["id"]), request="draw a blue whale", route="generate", decided_by="rules",
            trace={"why": "generate 6 vs 0", "calls": [{"tool": "generate", "args": 'prompt="blue whale"',
                                                       "outcome": f"queued job #{job_id}"}]}, job_ids=(job_id,)))  # fmt: skip
        for who, shown in ((fake.alice, True), (fake.bob, False)):  # only the owner sees why
            click = fake.click(msg, f"atelier:i:{job_id}", who=who)
            await env.send("INTERACTION_CREATE", click)
            cb = await fake.wait_for(lambda c=click: fake.find("POST", rf"{c['token']}/callback"))
            text = cb[0].body["data"]["content"]
            assert ('You asked: "draw a blue whale"' in text and "decided by my rules" in text) == shown
        click = fake.click(msg, f"atelier:f:{job_id}")
        await env.send("INTERACTION_CREATE", click)
        await fake.wait_for(lambda: fake.find("POST", rf"{click['token']}/callback"))
        gen = (await env.services.jobs.require(job_id)).result["generation_id"]
        page = await env.services.store.history.recent(__import__("engine.store.history").store.history.Scope(
            int(fake.alice["id"])))  # fmt: skip
        assert [g.favorite for g in page.items if g.id == gen] == [True]


async def test_buttons_survive_a_restart(tmp_path, monkeypatch):
    from tests.discord_fake import FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    try:
        async with running_env(tmp_path, monkeypatch, fake=fake) as env:
            msg, job_id = await _result_message(env)
        # a new process: new bot, same database, nothing in memory about the old message
        async with running_env(tmp_path, monkeypatch, fake=fake) as env2:
            patterns = env2.bot._connection._view_store._dynamic_items  # registered in setup_hook
            assert any(p.fullmatch(f"atelier:u:{job_id}:1") for p in patterns)
            click = fake.click(msg, f"atelier:u:{job_id}:1")
            await env2.send("INTERACTION_CREATE", click)
            await fake.wait_for(
                lambda: fake.find("POST", rf"{click['token']}/callback"), what="ack after restart"
            )
            states = ("queued", "running", "done")
            for _ in range(200):  # the ack (defer) goes out before the job is submitted
                jobs = await env2.services.jobs.user_jobs(int(fake.alice["id"]), states)
                if len(jobs) > 1:
                    break
                await asyncio.sleep(0.05)
            assert [j.kind for j in jobs] == ["generate", "upscale"]
            assert jobs[-1].payload == {"generation_id": jobs[0].result["generation_id"], "index": 0}
    finally:
        await fake.stop()
