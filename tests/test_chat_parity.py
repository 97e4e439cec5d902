"""The terminal's equivalents of Discord's /settings, progress estimate and /imagine best_of (issue 16)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.chat import TerminalChat, json_lines
from bot.chat_commands import parse_imagine
from bot.chat_settings import parse_settings
from bot.usecases import account
from bot.usecases.errors import UserError
from bot.usecases.quality import queued_line, queued_text, ranked_images
from engine.core import Engine
from engine.store.cache import Estimate
from tests import test_scoring

svc, tiny_clip_path = test_scoring.svc, test_scoring.tiny_clip_path  # fixtures: a tiny engine that scores with CLIP
A = 11
QUEUED = re.compile(r"Job #\d+ (queued — position 1 in the queue|started) · ≈ \d+\.\d GPU-s")


async def test_terminal_settings_show_change_and_clear_the_saved_defaults(svc: Engine):
    chat = TerminalChat(svc, agent=None, user_id=A)  # type: ignore[arg-type]  # /settings needs no agent
    shown = await chat.command("/settings")
    assert "nothing set" in shown and "Memory limits on this device" in shown
    out = await chat.command("/settings preset tiny cache off draft=on --count 2")
    for line in ("• cache: `False`", "• draft: `True`", "• preset: `tiny`", "• count: `2`", "• tiny: up to"):
        assert line in out
    assert await svc.store.settings.get("user", A) == {"preset": "tiny", "cache": False, "draft": True, "count": 2}
    assert "• draft: `False`" in await chat.command("/settings draft no")
    with pytest.raises(UserError, match="cache takes on or off, not 'maybe'"):
        await chat.command("/settings cache maybe")
    with pytest.raises(UserError, match="unknown setting 'colour'"):
        await chat.command("/settings colour red")
    with pytest.raises(UserError, match="count must be between 1 and 4, got 9"):
        await chat.command("/settings count 9")
    with pytest.raises(UserError, match="draft needs a value"):
        parse_settings("draft")
    assert await svc.store.settings.get("user", A) == {"preset": "tiny", "cache": False, "draft": False, "count": 2}
    await chat.command("/settings clear preset tiny")
    assert await svc.store.settings.get("user", A) == {"preset": "tiny"}
    assert "settings" in await chat.command("/help")


async def test_the_terminal_cache_setting_decides_whether_a_seeded_request_is_reused(svc: Engine):
    chat = TerminalChat(svc, agent=None, user_id=A)  # type: ignore[arg-type]
    await chat.command("/settings cache off")
    payload = await account.imagine_payload(svc, user_id=A, guild_id=0, prompt="a fox", preset="tiny", seed=5)
    await chat._run(payload)
    assert "cached" not in await chat._run(payload)
    await chat.command("/settings cache on")
    assert "♻️ cached (from generation #" in await chat._run(payload)


async def test_a_terminal_job_prints_its_queued_line_with_the_estimate(svc: Engine):
    chat = TerminalChat(svc, agent=None, user_id=A)  # type: ignore[arg-type]
    lines: list[str] = []
    chat.notify = lines.append
    await chat.command("/settings preset tiny")
    out = await chat.command("/imagine a lighthouse")
    (line,) = lines
    assert QUEUED.fullmatch(line), line
    assert Path(out.splitlines()[0]).is_file()
    stdout = io.StringIO()
    assert await json_lines(chat, io.StringIO("/imagine a red boat\n"), stdout) == 0
    (obj,) = [json.loads(x) for x in stdout.getvalue().splitlines()]
    assert QUEUED.fullmatch(obj["queued"][0]) and Path(obj["output"].splitlines()[0]).is_file()


async def test_queued_text_gives_the_position_the_estimate_and_the_queue_eta(env):
    engine = SimpleNamespace(store=env.store, jobs=env.jobs, runner=SimpleNamespace(concurrency=1))
    first = await env.jobs.enqueue(1, 0, 0, "generate", {"prompt": "a"}, estimate=Estimate(4.0, 100.0))
    second = await env.jobs.enqueue(2, 0, 0, "generate", {"prompt": "b"}, estimate=Estimate(2.0, 100.0))
    text = await queued_text(engine, second)  # type: ignore[arg-type]
    assert text == f"Job #{second} queued — position 2 in the queue · ≈ 2.0 GPU-s · starts in ≈ 4 s"
    engine.runner.concurrency = 2
    assert (await queued_text(engine, second)).endswith("starts in ≈ 2 s")  # type: ignore[arg-type]
    assert (await env.jobs.claim("w")).id == first
    assert await queued_text(engine, first) == f"Job #{first} started · ≈ 4.0 GPU-s"  # type: ignore[arg-type]
    assert queued_line(7, None) == "Job #7 queued — waiting for a worker"


async def test_terminal_best_of_lists_the_images_best_first_with_their_clip_scores(svc: Engine):
    chat = TerminalChat(svc, agent=None, user_id=A)  # type: ignore[arg-type]
    await chat.command("/settings preset tiny")
    out = await chat.command("/imagine --best-of 3 a red fox")
    ranked = [line for line in out.splitlines() if ".png · CLIP " in line]
    assert len(ranked) == 3 and ranked[0].endswith("(best)") and "best of 3 by CLIP score" in out
    scores = [float(line.split(" · CLIP ")[1].split()[0]) for line in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(Path(line.split(" · ")[0]).is_file() for line in ranked)
    job = (await svc.jobs.user_jobs(A, ("done",)))[-1]
    assert job.payload["best_of"] == 3
    assert parse_imagine("a cat --best-of=4").best_of == 4 and parse_imagine("a cat").best_of is None
    with pytest.raises(UserError, match="--best-of needs a number"):
        parse_imagine("--best-of many cats")
    with pytest.raises(UserError, match="best_of must be between 2 and 4, got 1"):
        await chat.command("/imagine --best-of 1 a cat")
    assert ranked_images(["a.png", "b.png"], {"clip_scores": [1.0, 2.0]}) == ["a.png", "b.png"]  # not best-of
