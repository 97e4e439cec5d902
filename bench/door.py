"""Door latency per file: from a user's message to the bot's reply, through the fake Discord. Prints ONE JSON line.

The issue-18 cases, each attached to "@Atelier what do you think of this?": a 24 MB BMP, a PNG claiming
50000x50000, an empty file, a GIF frame claiming 65535x65535, a shell script named .png, a truncated PNG (each must
get its own message at once, with no agent turn and no job), a JPEG named .png and a valid WEBP (both must go to
critique). Then "draw a red fox" must draw.

The bot runs on a real store, job queue and runner (fast fake image handlers) and the real agent (rules,
orchestrator, tools) with scripted language and vision models, so the numbers are the door's own path
(download, decode off the event loop, the answer or the critique tool), not model inference. Latency is the
time from dispatching the gateway event to the fake receiving the reply. Never asserts.

Usage: python -m bench.door [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.soak_support import Patch
from tests.discord_support import Env, running_env
from tests.door_files import BAD, GOOD, big_bmp
from tests.door_support import ask_about, critique_agent, wait_answer

REPLY_CHARS = 160


def cases() -> list[tuple[str, bytes, str, str]]:
    """(file name, bytes, content type, expected outcome): the bad files, then the good ones."""
    bad = [(n, big_bmp() if d is None else d, c, "rejected") for n, d, c, _ in BAD]
    return bad + [(n, d, c, "critique") for n, d, c in GOOD]


async def _one(env: Env, name: str, data: bytes, ctype: str) -> dict[str, Any]:
    """Send one file; the reply's latency, its text, and what ran behind it."""
    orch = env.bot.agent.orchestrator
    calls_before = len(orch.log)
    jobs_before = sum((await env.services.jobs.counts()).values())
    ask = ask_about(env.fake, name, data, ctype)
    t0 = time.monotonic()
    await env.fake.dispatch("MESSAGE_CREATE", ask)
    reply = await wait_answer(env.fake, ask["id"], f"the answer about {name}", timeout=60)
    return {
        "ms": round((reply.at - t0) * 1000, 1),
        "reply": reply.body["content"][:REPLY_CHARS],
        "tools": [c.name for c in list(orch.log)[calls_before:]],
        "jobs": sum((await env.services.jobs.counts()).values()) - jobs_before,
    }


async def _draw(env: Env) -> dict[str, Any]:
    """'draw a red fox' after the files: time until the job ran."""
    fake = env.fake
    ask = fake.message(fake.alice, f"<@{fake.bot_user['id']}> draw a red fox", mentions=[fake.bot_user])
    t0 = time.monotonic()
    await fake.dispatch("MESSAGE_CREATE", ask)
    await fake.wait_for(lambda: env.handlers.runs or None, timeout=60, what="the drawing")
    return {
        "ms_to_job_run": round((time.monotonic() - t0) * 1000, 1),
        "prompt": env.handlers.runs[0][1]["prompt"],
    }


def _summary(name: str, expect: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [r["ms"] for r in runs]
    last = runs[-1]
    return {
        "file": name, "expect": expect, "ms_median": round(statistics.median(ms), 1), "ms_max": max(ms),
        "tools": last["tools"], "jobs": sum(r["jobs"] for r in runs), "reply": last["reply"],
    }  # fmt: skip


async def run(repeat: int) -> dict[str, Any]:
    """Every case `repeat` times on one running bot, then a drawing request."""
    patch = Patch()
    todo = cases()
    with tempfile.TemporaryDirectory(prefix="atelier-door-") as tmp:
        try:
            async with running_env(Path(tmp), patch) as env:
                env.bot.agent = critique_agent(env.services, script=[{"prompt": "a red fox"}],
                                               critiques=repeat * len(GOOD))  # fmt: skip
                per_case = [[await _one(env, n, d, c) for _ in range(repeat)] for n, d, c, _ in todo]
                draw = await _draw(env)
                loop = env.bot.watchdog.stats() if env.bot.watchdog is not None else {}
        finally:
            patch.undo()
    results = [_summary(n, e, runs) for (n, _, _, e), runs in zip(todo, per_case, strict=True)]
    bad = [r for r in results if r["expect"] == "rejected"]
    return {
        "bench": "door", "repeat": repeat, "cases": results,
        "bad_max_ms": max(r["ms_max"] for r in bad),
        "bad_reached_agent": sum(bool(r["tools"]) for r in bad), "bad_jobs": sum(r["jobs"] for r in bad),
        "good_to_critique": [r["file"] for r in results if r["expect"] == "critique" and r["tools"] == ["critique"]],
        "next_request": draw, "loop": loop,
    }  # fmt: skip


def main() -> None:
    """Parse the arguments, run the bench, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="times each file is sent (default 3)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(max(1, args.repeat))), ensure_ascii=False))


if __name__ == "__main__":
    main()
