"""Soak test: the real bot (SmolLM2 agent, tiny models) on a fake Discord with Redis workers and chaos.

python -m bench.soak [--minutes 10] [--users 50] [--seed 7] [--workers 2] [--drain-s 300] [--keep]

50 users send a seeded mix of /imagine, @mentions, replies to results, good and bad image uploads, button
clicks and /cancel, about one event every 1-3 s. Mid-run the Valkey server is restarted on the same port
(fresh, or with --valkey-keep-data keeping its AOF) and one worker is SIGKILLed and replaced. At the end it
waits (bounded) for in-flight jobs and prints ONE JSON line: delivery, loss, duplicates, RSS, loop lag.
RSS growth is counted from the end of a warm-up (every model loaded, every agent route taken once).
Workers that exit on their own are logged and replaced (--no-supervise: not replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import soak_support as ss
from engine.runtime.llm.arbiter_chat import ArbiterChat
from engine.runtime.llm.grammar import cached_count
from tests.door_files import BAD, encoded

SUBJECTS = ["a red fox in the snow", "a lighthouse at dusk", "a blue robot reading", "a castle on a hill",
            "a cat astronaut", "a harbour at dawn", "a forest spirit", "a neon city street",
            "a fox cub"]  # fmt: skip
STYLES = ["", ", watercolor", ", oil painting", ", moody", ", ink sketch", ", 16:9"]
ASKS = ["draw {s}", "can you paint {s}?", "make me {s}", "a picture of {s} please"]
CHATS = ["what can you do?", "hi! how are you?", "help"]
SEARCHES = ["find my fox pictures", "show me my lighthouse images", "find my old robot pictures"]
EDITS = ["make it darker", "make it brighter", "same but at night", "more colorful please"]
IMAGE_ASKS = ["what do you think of this?", "critique this image", "draw this as a watercolor"]
GOOD = [("photo.png", encoded("PNG"), "image/png"), ("photo.webp", encoded("WEBP"), "image/webp")]
BAD_FILES = [b for b in BAD if b[0] in ("bomb.png", "empty.png", "cut.png", "script.png")]
MIX = {"imagine": 22, "imagine_x2": 6, "mention_draw": 12, "mention_chat": 5, "mention_search": 5,
       "reply_edit": 9, "image_good": 6, "image_bad": 7, "click_variation": 8, "click_upscale": 5,
       "click_info": 4, "click_favorite": 4, "cancel": 5}  # fmt: skip
CLICKS = {"click_variation": "atelier:v:{job}:1", "click_upscale": "atelier:u:{job}:1",
          "click_info": "atelier:i:{job}", "click_favorite": "atelier:f:{job}"}  # fmt: skip
WARM_KINDS = ["mention_draw", "mention_chat", "mention_search", "image_good", "image_bad", "reply_edit",
              "click_variation", "click_upscale", "click_info", "click_favorite", "imagine_x2",
              "cancel"]  # fmt: skip
NEEDS_RESULT = {"reply_edit", "click_variation", "click_upscale", "click_info", "click_favorite"}
log = logging.getLogger("bench.soak")


class Traffic:
    """Builds and dispatches seeded user events; remembers what each one expects back."""

    def __init__(self, fake: ss.SoakFake, services: Any, rng: random.Random) -> None:
        self.fake, self.services, self.rng = fake, services, rng
        self.kinds: collections.Counter[str] = collections.Counter()
        self.expect: list[dict] = []  # {"kind", "key": interaction or message id, "bad": (name, words)}
        self.me = f"<@{fake.bot_user['id']}>"
        self.t0 = time.monotonic()
        self.tasks: set[asyncio.Task] = set()  # delayed /cancel events

    def _prompt(self) -> str:
        return self.rng.choice(SUBJECTS) + self.rng.choice(STYLES)

    def _mention(self, who: dict, text: str, **kw: Any) -> dict:
        return self.fake.message(who, f"{self.me} {text}", mentions=[self.fake.bot_user], **kw)

    def _result(self, kind: str) -> tuple[int, dict, int, str] | None:
        """A recent posted result (and the custom_id to click) whose message has that button."""
        picks = []
        for job, mid, owner in self.fake.results[-25:]:
            if (msg := self.fake.messages.get(mid)) is None:
                continue
            cid = CLICKS.get(kind, "").format(job=job)
            if not cid or cid in ss.button_ids(msg):  # a user can only click what is on the message
                picks.append((job, msg, owner, cid))
        return self.rng.choice(picks) if picks else None

    async def _send(self, kind: str, event: str, payload: dict, **extra: Any) -> str:
        """Dispatch one gateway event and remember what it expects back."""
        at = round(time.monotonic() - self.t0, 1)
        self.expect.append({"kind": kind, "at_s": at, "key": int(payload["id"]),
                            "interaction": event == "INTERACTION_CREATE", **extra})  # fmt: skip
        self.kinds[kind] += 1
        await self.fake.dispatch(event, payload)
        return kind

    async def _cancel_later(self, who: dict) -> None:
        await asyncio.sleep(self.rng.uniform(0.05, 1.0))
        await self._send("cancel", "INTERACTION_CREATE", self.fake.slash("cancel", who))

    async def step(self, kind: str | None = None, text: str | None = None, who: dict | None = None) -> str:
        """Send one event (of a random kind and text unless given); returns its kind."""
        kind = kind or self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        who = who or self.rng.choice(self.fake.people)
        result = self._result(kind) if kind in NEEDS_RESULT else None
        if kind in NEEDS_RESULT and result is None:
            kind = "imagine"
        if kind == "cancel":  # a user changes their mind: /imagine, then /cancel a moment later
            await self.step("imagine", who=who)
            self.tasks.add(task := asyncio.create_task(self._cancel_later(who)))
            task.add_done_callback(self.tasks.discard)
            return kind
        if kind.startswith("imagine"):
            opts = {"count": 2} if kind == "imagine_x2" else {}
            return await self._send(
                kind, "INTERACTION_CREATE", self.fake.slash("imagine", who, prompt=self._prompt(), **opts)
            )
        if kind.startswith("click_"):
            job, msg, owner, cid = result
            if kind == "click_favorite":  # mostly the owner, sometimes someone else (a specific refusal)
                who = next((u for u in self.fake.people if int(u["id"]) == owner), who)
                who = who if self.rng.random() < 0.8 else self.rng.choice(self.fake.people)
            return await self._send(kind, "INTERACTION_CREATE", self.fake.click(msg, cid, who))
        if kind == "reply_edit":
            msg = result[1]
            payload = self.fake.message(
                who, self.rng.choice(EDITS), reply_to=int(msg["id"]), mentions=[self.fake.bot_user]
            )
            return await self._send(kind, "MESSAGE_CREATE", payload)
        if kind == "image_good":
            name, data, ctype = self.rng.choice(GOOD)
            att = self.fake.attachment(name, data, ctype)
            payload = self._mention(who, text or self.rng.choice(IMAGE_ASKS), attachments=[att])
            return await self._send(kind, "MESSAGE_CREATE", payload)
        if kind == "image_bad":
            name, data, ctype, words = self.rng.choice(BAD_FILES)
            att = self.fake.attachment(name, data, ctype)
            payload = self._mention(who, self.rng.choice(IMAGE_ASKS), attachments=[att])
            return await self._send(kind, "MESSAGE_CREATE", payload, bad=(name, words))
        text = {"mention_draw": lambda: self.rng.choice(ASKS).format(s=self._prompt()),
                "mention_chat": lambda: self.rng.choice(CHATS),
                "mention_search": lambda: self.rng.choice(SEARCHES)}[kind]()  # fmt: skip
        return await self._send(kind, "MESSAGE_CREATE", self._mention(who, text))

    def answered(self, e: dict) -> bool:
        """Whether the bot answered this event (an interaction callback, or a reply to the message)."""
        if e["interaction"]:
            return e["key"] in self.fake.callbacks
        return bool(self.fake.replies.get(e["key"]))

    def bad_answered(self, e: dict) -> bool:
        """A bad file got a reply that names it and says what is wrong."""
        name, words = e["bad"]
        return any(name in r and words in r for r in self.fake.replies.get(e["key"], []))


class Soak:
    """One soak run: setup, traffic with chaos, drain, report; teardown always."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="atelier-soak-"))
        self.valkey = ss.Valkey(self.work, keep_data=args.valkey_keep_data)
        self.workers: list[ss.Worker] = []
        self.patch = ss.Patch()
        self.chaos: dict[str, Any] = {}
        self.worker_exits: list[dict] = []
        self.rss_timeline: list[float] = []
        self.load_timeline: list[float] = []
        self.t0 = time.monotonic()

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def spawn_worker(self) -> ss.Worker:
        """Start one more worker subprocess."""
        w = ss.Worker(self.config, self.work / f"worker{len(self.workers)}.log", self.args.worker_threads)
        w.expected_exit = False
        self.workers.append(w)
        return w

    async def _chaos(self, minutes: float) -> None:
        total = minutes * 60
        await asyncio.sleep(total * 0.4)
        self.chaos["valkey_restart_at_s"] = self._elapsed()
        self.chaos["valkey_down_s"] = round(await asyncio.to_thread(self.valkey.restart), 2)
        await asyncio.sleep(total * 0.25)
        victim, busy = await ss.busy_worker(self.workers, self.services.remote.pool)
        if victim is None:
            self.chaos["worker_kill"] = "no live worker to kill"
            return
        self.chaos["worker_kill_at_s"] = self._elapsed()
        self.chaos["worker_killed_running_jobs"] = busy
        victim.expected_exit = True
        await asyncio.to_thread(victim.kill)
        await self.spawn_worker().ready()
        self.chaos["replacement_ready_at_s"] = self._elapsed()

    async def _supervise(self) -> None:
        """Like systemd Restart=always: a worker that exits on its own is logged and replaced."""
        while True:
            await asyncio.sleep(1.0)
            for w in list(self.workers):
                if w.proc.poll() is None or w.expected_exit:
                    continue
                w.expected_exit = True
                last = w.tail(1)
                self.worker_exits.append(
                    {"at_s": self._elapsed(), "rc": w.proc.returncode, "last": last[-160:]}
                )
                if self.args.supervise:
                    self.spawn_worker()

    async def _monitor(self, traffic: Traffic) -> None:
        """RSS every 30 s (kept for the report) and a progress line on stderr."""
        while True:
            await asyncio.sleep(30)
            self.rss_timeline.append(ss.rss_mb())
            self.load_timeline.append(round(os.getloadavg()[0], 2))  # other work on the machine shows here
            counts = await self.services.jobs.counts()
            print(f"[soak {self._elapsed():.0f}s] events {sum(traffic.kinds.values())} jobs {counts}"
                  f" rss {self.rss_timeline[-1]} MB", file=sys.stderr, flush=True)  # fmt: skip

    async def _warm_up(self, agent: Any) -> float:
        """Load every model and take each agent route once, so RSS growth measures the steady state."""
        t0, fake = time.monotonic(), self.fake
        warm = await self.services.submit(
            "generate", {"prompt": "warm up"}, user_id=1, channel_id=fake.channel_id
        )
        await self.services.wait(warm, 180)
        await agent.model.achat([{"role": "user", "content": "hi"}], max_tokens=4)
        if self.services.default_vision_preset:  # critique's model
            seer = await self.services.models.llm_model(self.services.default_vision_preset)
            await ArbiterChat(self.services.arbiter, seer).achat(
                [{"role": "user", "content": "hi"}], max_tokens=4
            )
        traffic = Traffic(fake, self.services, random.Random(self.args.seed + 1))
        warm_turns = [(k, None) for k in WARM_KINDS] + [("image_good", t) for t in IMAGE_ASKS]
        for kind, text in warm_turns if self.args.warmup else ():
            wait_until = time.monotonic() + 90  # one at a time: each route's first use, not a burst
            while (
                traffic.expect and not traffic.answered(traffic.expect[-1]) and time.monotonic() < wait_until
            ):
                await asyncio.sleep(0.2)
            await traffic.step(kind, text)
        await asyncio.gather(*traffic.tasks, return_exceptions=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not ss.settled(
            await ss.job_rows(self.services, warm), fake, traffic
        ):
            await asyncio.sleep(0.5)
        self.warmup_events = dict(traffic.kinds)
        self.first_job = int((await self.services.jobs.db.fetchone("SELECT MAX(id) FROM jobs"))[0]) + 1
        return round(time.monotonic() - t0, 1)

    async def run(self) -> dict[str, Any]:
        """The whole run; returns the report."""
        from bot.app import App
        from bot.discord.bot import AtelierBot
        from engine.looplag import LoopWatchdog
        from tests.queue_support import write_config

        a = self.args
        url = await asyncio.to_thread(self.valkey.start)
        settings = ss.soak_settings(self.work / "data", url, a.max_per_user)
        self.config = write_config(settings, self.work / "config.json")
        for _ in range(a.workers):
            self.spawn_worker()
        self.fake = fake = ss.SoakFake(a.users)
        await fake.start()
        fake.patch(self.patch)
        self.app = await App.start(settings, demo=True)
        self.services, agent = self.app.engine, self.app.agent
        bot = self.bot = AtelierBot(self.services, agent, guild_ready_timeout=0.05)
        self.bot_task = asyncio.create_task(bot.start("fake-token"))
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        await asyncio.gather(*(w.ready() for w in self.workers))
        boot_s = self._elapsed()
        rss_boot = ss.rss_mb()
        warmup_s = await self._warm_up(agent)
        rss_start, objects_start = ss.rss_mb(), len(gc.get_objects())
        dog = LoopWatchdog().start()
        traffic = Traffic(fake, self.services, random.Random(a.seed))
        self.t0 = time.monotonic()
        helpers = [asyncio.create_task(c) for c in (self._supervise(), self._monitor(traffic))]
        chaos = asyncio.create_task(self._chaos(a.minutes))
        end = self.t0 + a.minutes * 60
        while time.monotonic() < end:
            kind = await traffic.step()
            log.info("event %s at %.1f s, rss %.1f MB", kind, time.monotonic() - self.t0, ss.rss_mb())
            await asyncio.sleep(traffic.rng.uniform(a.gap_min, a.gap_max))
        traffic_s = self._elapsed()
        await asyncio.gather(*traffic.tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(chaos, 240)  # a short run may end before the replacement is ready
        except Exception as e:  # noqa: BLE001 - reported, not raised
            self.chaos["chaos_error"] = repr(e)[:200]
        deadline = time.monotonic() + a.drain_s
        while time.monotonic() < deadline and not ss.settled(
            await ss.job_rows(self.services, self.first_job), fake, traffic
        ):
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # late duplicate posts would show up here
        rows = await ss.job_rows(self.services, self.first_job)
        dog.stop()
        for h in helpers:
            h.cancel()
        lag, bot_lag = dog.stats(), bot.watchdog.stats()
        rss_end = ss.rss_mb()
        return {
            "minutes": a.minutes, "users": a.users, "seed": a.seed, "workers": a.workers,
            "boot_s": boot_s, "warmup_s": warmup_s, "warmup_events": self.warmup_events,
            "traffic_s": traffic_s, "drain_s": round(self._elapsed() - traffic_s, 1),
            **ss.ledger(rows, fake, traffic),
            "events": sum(traffic.kinds.values()), "events_by_kind": dict(sorted(traffic.kinds.items())),
            "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth_mb": round(rss_end - rss_start, 1),
            "rss_timeline_mb": self.rss_timeline, "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
            "loadavg_1m_timeline": self.load_timeline, "cpus": os.cpu_count(), "rss_boot_mb": rss_boot,
            "py_objects_start": objects_start, "py_objects_end": len(gc.get_objects()),
            "llm_grammars_cached": cached_count(),
            "worker_rss_mb": [w.rss_mb() for w in self.workers if w.proc.poll() is None],
            "workers_started": len(self.workers), "worker_unexpected_exits": self.worker_exits,
            "loop_lag_p99_ms": lag["p99_ms"], "loop_lag_max_ms": lag["max_ms"], "loop_stalls": lag["stalls"],
            "bot_watchdog": bot_lag,
            "discord_api_errors": len(fake.api_errors) + self.logs.counts["discord_error"],
            "api_error_samples": fake.api_errors[:5], "rest_calls": len(fake.calls),
            "rest_status": {str(k): v for k, v in sorted(fake.status.items())}, "uploads": fake.uploads,
            "log_counts": dict(sorted(self.logs.counts.items())), "log_error_samples": self.logs.samples,
            "valkey_restart_at_s": None, "worker_kill_at_s": None, **self.chaos,
            "valkey_restart_mode": "keep-data (AOF)" if a.valkey_keep_data else "fresh (data lost)",
            "workdir": str(self.work) if a.keep else None,
        }  # fmt: skip

    async def teardown(self) -> None:
        """Close the bot, stop services, the fake, workers and Valkey, restore patches (each step guarded)."""
        steps = [
            lambda: self.bot.close(),
            lambda: asyncio.wait_for(asyncio.gather(self.bot_task, return_exceptions=True), 10),
            lambda: self.services.stop(),
            lambda: self.fake.stop(),
        ]
        for step in steps:
            with contextlib.suppress(Exception):
                await step()
        self.kill_all()

    def kill_all(self) -> None:
        """Synchronous last line: workers, Valkey, patches, the work dir."""
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop(grace_s=5)
        with contextlib.suppress(Exception):
            self.valkey.stop()
        self.patch.undo()
        if not self.args.keep:
            root = logging.getLogger()
            for h in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
                root.removeHandler(h)
                h.close()
            shutil.rmtree(self.work, ignore_errors=True)


async def amain(soak: Soak) -> dict[str, Any]:
    """Run the soak with logs to a file, SIGTERM cancelling it, teardown on any exit."""
    soak.logs = ss.log_to(soak.work / "soak.log")
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await soak.run()
    finally:
        await asyncio.shield(soak.teardown())


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print one JSON line."""
    args = ss.parse_args(argv, __doc__.splitlines()[0])
    soak = Soak(args)
    t0 = time.monotonic()
    try:
        report = asyncio.run(amain(soak))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        print(json.dumps({"interrupted": True, "after_s": round(time.monotonic() - t0, 1)}))
        return 130
    finally:
        soak.kill_all()
    report["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
