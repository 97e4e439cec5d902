"""Posting results: exactly once across racing posters, retries without regenerating, 429s, expired tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os

from PIL import Image

from bot.discord.progress import ProgressPoster
from engine.config import Images
from tests.discord_support import make_settings, running_env


def _posts_with_files(fake) -> list:
    return [c for c in fake.calls if c.method in ("POST", "PATCH") and c.body.get("components") and c.files]


async def test_two_racing_posters_post_a_result_exactly_once(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake, services = env.fake, env.services
        env.bot.poster.claim_grace_s = 0
        second = ProgressPoster(env.bot, services, claim_grace_s=0)
        services.runner.subscribe(second)
        job_id = await services.submit("generate", {"prompt": "twice?"}, user_id=int(fake.alice["id"]),
                                       guild_id=fake.guild_id, channel_id=fake.channel_id)  # fmt: skip
        await services.runner.run_one()
        await asyncio.gather(env.bot.poster.drain(), second.drain())
        job = await services.jobs.require(job_id)
        await asyncio.gather(env.bot.poster.on_done(job), second.on_done(job))  # a late duplicate announce
        await asyncio.gather(env.bot.poster.drain(), second.drain())
        posts = _posts_with_files(fake)
        assert len(posts) == 1 and posts[0].path == f"/channels/{fake.channel_id}/messages"
        assert (await services.jobs.require(job_id)).posted


async def test_a_job_from_another_front_is_left_to_that_front(tmp_path, monkeypatch):
    # `atelier run --web`: the web API's (and the terminal's) jobs have no Discord channel; the bot never claims them
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake, services = env.fake, env.services
        env.bot.poster.claim_grace_s = 0
        job_id = await services.submit("generate", {"prompt": "via the API"}, user_id=int(fake.alice["id"]),
                                       reply_to={"web_key": 1})  # fmt: skip
        await services.runner.run_one()
        await env.bot.poster.drain()
        job = await services.jobs.require(job_id)
        assert job.state == "done" and not job.posted  # still the web front's to deliver (webhook, SSE)
        assert _posts_with_files(fake) == []


async def test_failed_post_is_retried_without_generating_twice(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        env.bot.poster.retry_backoff_s = 0.01
        rate_limit = {"Via": "1.1 google", "X-RateLimit-Bucket": "b", "X-RateLimit-Remaining": "0",
                      "X-RateLimit-Reset-After": "0.05", "X-RateLimit-Limit": "5"}  # fmt: skip
        payload = fake.slash("imagine", prompt="stubborn")
        tok = payload["token"]
        # the first result upload is rate limited (discord.py waits and retries), the next one is refused
        final = lambda body: bool(body.get("components"))  # noqa: E731
        fake.fail_next("PATCH", rf"{tok}/messages/@original", 429, {"retry_after": 0.05, "global": False,
                       "message": "slow"}, rate_limit, when=final)  # fmt: skip
        fake.fail_next(
            "PATCH", rf"{tok}/messages/@original", 400, {"message": "hiccup", "code": 0}, when=final
        )
        await env.send("INTERACTION_CREATE", payload)
        await fake.wait_for(lambda: fake.messages.get(fake.originals.get(tok, -1), {}).get("components"),
                            timeout=20, what="result after retries")  # fmt: skip
        assert len(env.handlers.runs) == 1  # generated once
        statuses = [c for c in fake.find("PATCH", rf"{tok}/messages/@original") if c.body.get("components")]
        assert len(statuses) >= 3  # 429'd, failed, then delivered


async def test_jobs_outliving_the_token_are_delivered_with_a_channel_message(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch) as env:
        fake = env.fake
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
        payload = fake.slash("imagine", prompt="slow burn", when=old)
        fake.expired_tokens.add(payload["token"])  # webhook calls with it would now get 401
        await env.send("INTERACTION_CREATE", payload)
        posted = await fake.wait_for(lambda: _posts_with_files(fake), what="channel result")
        assert posted[0].path == f"/channels/{fake.channel_id}/messages"
        assert not fake.find("PATCH", rf"{payload['token']}"), "used an expired interaction token"
        interim = fake.find("POST", rf"/channels/{fake.channel_id}/messages$")[0]
        assert "queued" in interim.body["content"] or "%" in interim.body["content"]
        # the interim progress message is deleted right after the result is posted
        await fake.wait_for(lambda: fake.find("DELETE", r"/channels/\d+/messages/\d+"), timeout=10,
                            what="interim progress message deleted")  # fmt: skip


async def test_result_over_the_upload_limit_is_reencoded(tmp_path, monkeypatch):
    base = make_settings(tmp_path)
    settings = base.model_copy(update={"images": Images(upload_limit_bytes=60_000)})
    async with running_env(tmp_path, monkeypatch, settings=settings) as env:
        env.handlers.size = (256, 256)
        orig = env.handlers.run

        async def noisy(job, ctx):
            out = await orig(job, ctx)
            Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(out["images"][0])
            return out

        env.handlers.run = noisy
        env.services.runner.handlers["generate"] = noisy
        fake = env.fake
        await env.send("INTERACTION_CREATE", fake.slash("imagine", prompt="static"))
        posted = await fake.wait_for(lambda: _posts_with_files(fake), what="result")
        ((name, data),) = posted[0].files
        assert os.path.getsize(env.tmp / "job1-0.png") > 60_000
        assert name == "job1-0.jpg" and len(data) <= 60_000
        assert Image.open(io.BytesIO(data)).format == "JPEG"


async def test_unposted_results_are_posted_after_a_restart(tmp_path, monkeypatch):
    from tests.discord_fake import FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    try:
        async with running_env(tmp_path, monkeypatch, fake=fake, start_runner=False) as env:
            env.services.runner._subscribers.clear()  # the bot "crashes" before posting
            req = fake.message(fake.alice, "!imagine lost")
            job_id = await env.services.submit("generate", {"prompt": "lost"}, user_id=int(fake.alice["id"]),
                                               guild_id=fake.guild_id, channel_id=fake.channel_id,
                                               reply_to={"message_id": int(req["id"])})  # fmt: skip
            await env.services.runner.run_one()
        assert not _posts_with_files(fake)
        async with running_env(tmp_path, monkeypatch, fake=fake) as env2:  # runner.start() re-announces
            posted = await fake.wait_for(lambda: _posts_with_files(fake), what="re-announced result")
            assert str(posted[0].body["message_reference"]["message_id"]) == req["id"]
            assert (await env2.services.jobs.require(job_id)).posted
    finally:
        await fake.stop()
