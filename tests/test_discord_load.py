"""bench.discord_load in small: a few users on the fake Discord, real tiny pipeline, scripted agent.

Asserts the structural facts only (every job delivered exactly once, no API errors, no failed interaction,
every event answered); the timings are the bench's to report, not the test's to judge.
"""

from __future__ import annotations

import json
import random

from bench import discord_load
from bench.discord_load_support import LoadFake, percentile


def test_plan_sends_each_user_one_imagine_within_the_window():
    users = LoadFake(20).people
    events = discord_load.plan(users, 4.0, random.Random(3))
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    assert all(0 <= at <= 4.0 for at, _, _ in events)
    imagines = [who["id"] for _, kind, who in events if kind == "imagine"]
    assert sorted(imagines) == sorted(u["id"] for u in users)
    assert {kind for _, kind, _ in events} <= {"imagine", "mention_draw", "mention_chat", *discord_load.CLICKS}


def test_percentile_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile([float(i) for i in range(100)], 0.99) == 99.0


async def test_small_crowd_every_job_delivered_once(tmp_path, tiny_models_dir):
    args = discord_load.parse_args(["--users", "6", "--seconds", "4", "--seed", "5", "--drain-s", "240",
                                    "--models", str(tiny_models_dir)])  # fmt: skip
    report = await discord_load.run_load(args, tmp_path)
    print("\nDISCORD_LOAD " + json.dumps(report))
    assert report["events"] == sum(report["events_by_kind"].values()) >= 6
    assert report["unanswered_events"] == 0
    assert report["failed_interactions"] == 0 and report["interactions"] >= 6
    assert report["discord_api_errors"] == 0, report["api_error_samples"]
    assert report["jobs_submitted"] >= 6  # one /imagine per user at least
    assert report["jobs_delivered"] == report["jobs_submitted"], report["job_states"]
    assert report["duplicate_deliveries"] == 0 and report["jobs_lost"] == 0
    assert report["every_job_delivered_once"]
    assert report["first_response_p50_ms"] is not None and report["loop_lag_p99_ms"] is not None
