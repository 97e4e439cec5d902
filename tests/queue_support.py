"""Helpers for the redis-backend tests: a real Valkey server, worker subprocesses and a small bot side."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from engine.config import Metrics, Paths, Queue, Settings
from engine.jobs.runner import JobRunner
from engine.remote import RemoteQueue, release_orphans, remote_handler
from engine.store import open_store
from engine.store.jobs import JobStore

REPO = Path(__file__).resolve().parent.parent
BOT_ID = "bot:test"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def http_get(url: str) -> tuple[int, str]:
    """GET a local endpoint (metrics, health) off the event loop: (status, body), error statuses included."""
    return await asyncio.to_thread(_get, url)


def make_settings(data_dir: Path, url: str, **queue: Any) -> Settings:
    """Redis-backend settings with fast heartbeats, metrics on a free port."""
    q = {"backend": "redis", "redis_url": url, "worker_ttl_s": 1.0, "job_timeout_s": 60.0, "max_per_user": 2}
    return Settings(
        paths=Paths(data_dir=str(data_dir)),
        queue=Queue(**(q | queue)),
        metrics=Metrics(port=0),
    )


def write_config(settings: Settings, path: Path) -> Path:
    """The settings as a config file for subprocesses."""
    path.write_text(json.dumps(settings.model_dump(mode="json")))
    return path


class WorkerProc:
    """`python -m bot.cli worker --diagnostics` as a subprocess; `ready()` waits for its ready line."""

    def __init__(self, config: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "bot.cli", "--config", str(config), "worker", "--diagnostics"]
        cmd += ["--metrics-port", "0", *args]
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.id: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if line.startswith("atelier worker ") and line.endswith(": ready"):
                self.id = line.removeprefix("atelier worker ").removesuffix(": ready")
                self._ready.set()

    async def ready(self, timeout: float = 60.0) -> str:
        """The worker id once it consumes jobs."""
        ok = await asyncio.to_thread(self._ready.wait, timeout)
        if not ok:
            raise TimeoutError("worker not ready:\n" + "\n".join(self.lines[-30:]))
        return self.id

    def kill(self, sig: int = 9) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)

    def output(self) -> str:
        return "\n".join(self.lines)


class Poster:
    """A front that posts each final job once (mark_posted) and records progress."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.posts: collections.Counter[int] = collections.Counter()
        self.progress: dict[int, list[int]] = collections.defaultdict(list)
        self.announced: collections.Counter[int] = collections.Counter()

    def on_progress(self, job_id: int, step: int, total: int, preview: Any) -> None:
        self.progress[job_id].append(step)

    async def on_done(self, job: Any) -> None:
        self.announced[job.id] += 1
        if await self.jobs.mark_posted(job.id):
            self.posts[job.id] += 1


class Bot:
    """The bot side of the redis backend: store + RemoteQueue + JobRunner running 'noop' jobs remotely."""

    def __init__(self, settings: Settings, concurrency: int = 5) -> None:
        self.settings = settings
        self.concurrency = concurrency

    async def __aenter__(self) -> Bot:
        self.store = await open_store(self.settings)
        self.jobs = JobStore(self.store.db, self.settings.queue)
        self.remote = RemoteQueue(self.settings)
        await self.remote.start()
        self.released = await release_orphans(self.jobs, BOT_ID)
        handlers = {"noop": remote_handler(self.remote, "noop")}
        self.runner = JobRunner(
            self.jobs, None, handlers, self.settings, BOT_ID, concurrency=self.concurrency, poll_s=0.05,
            cancel_poll_s=0.05, progress_interval_s=0.0,
        )  # fmt: skip
        self.poster = Poster(self.jobs)
        self.runner.subscribe(self.poster)
        await self.runner.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.stop()
        await self.remote.close()
        await self.store.close()

    async def submit(self, user: int, **payload: Any) -> int:
        job_id = await self.jobs.enqueue(user, 0, 0, "noop", payload)
        self.runner.wake()
        return job_id

    async def wait_final(self, ids: list[int], timeout: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            rows = [await self.jobs.require(i) for i in ids]
            if all(r.final for r in rows):
                await asyncio.sleep(0.1)  # let on_done subscribers run
                return [await self.jobs.require(i) for i in ids]
            if time.monotonic() > deadline:
                raise TimeoutError(f"not final: {[(r.id, r.state) for r in rows if not r.final]}")
            await asyncio.sleep(0.05)


async def bot_main(config: str, concurrency: int) -> None:
    """Entry point for a bot subprocess (killed by the restart test): runs until killed."""
    from engine.config import load_settings

    async with Bot(load_settings(config), concurrency):
        print("bot ready", flush=True)
        await asyncio.Event().wait()
