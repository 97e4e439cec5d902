"""Web API latency at a fixed concurrency; prints ONE JSON line and never asserts.

The real app on uvicorn (127.0.0.1, one process) over a demo Engine whose runner is off, so POST measures the
API's own path (auth, rate limit, payload build, engine.submit, enqueue) and not image generation. The client
(httpx, `--concurrency` requests in flight) runs in the same process and event loop, so the numbers include
its CPU cost too.

- history: GET /v1/history, half newest-first pages and half FTS searches, over `--rows` stored generations;
- generations: POST /v1/generations (JSON, /imagine's payload).

Usage: python -m bench.web_api [--requests N] [--concurrency C] [--rows R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

WORDS = [
    "lighthouse",
    "harbor",
    "fox",
    "tower",
    "forest",
    "neon",
    "city",
    "river",
    "castle",
    "dragon",
    "robot",
]


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def _load(client: httpx.AsyncClient, make, n: int, concurrency: int) -> dict[str, float | int]:
    """Run n requests, `concurrency` at a time; latency percentiles in ms and the error count."""
    times: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            method, url, kw = make(i)
            t = time.perf_counter()
            r = await client.request(method, url, **kw)
            times.append(time.perf_counter() - t)
            errors += r.status_code >= 400

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"p50_ms": _pct(times, 0.5), "p99_ms": _pct(times, 0.99), "mean_ms": round(statistics.mean(times) * 1000, 2),
            "rps": round(n / wall, 1), "errors": errors}  # fmt: skip


async def main(requests: int, concurrency: int, rows: int) -> dict:
    from bot.web.app import create_app
    from bot.web.server import WebServer
    from engine.config import Gpu, Paths, Queue, Settings, Web
    from engine.core import Engine

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            paths=Paths(data_dir=str(Path(tmp) / "data")), gpu=Gpu(device="cpu"),
            queue=Queue(daily_quota=10_000_000), web=Web(rate_burst=10_000_000, rate_per_minute=10_000_000),
        )  # fmt: skip
        engine = await Engine.start(settings, demo=True, worker=False)
        try:
            rnd = random.Random(1)
            batch = [
                {"user_id": 1 if i % 2 else 2, "prompt": " ".join(rnd.sample(WORDS, 4)) + f" {i}", "seed": i,
                 "images": [], "preset": "demo"}
                for i in range(rows)
            ]  # fmt: skip
            for start in range(0, rows, 5000):
                await engine.store.web.add_many(batch[start : start + 5000])
            token = (await engine.store.apikeys.create(1)).token
            app = create_app(engine, None, settings)
            server = await WebServer(app, "127.0.0.1", 0).start()
            headers = {"Authorization": f"Bearer {token}"}
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            try:
                async with httpx.AsyncClient(
                    base_url=server.url, headers=headers, limits=limits, timeout=60
                ) as c:

                    def history(i: int):
                        q = "" if i % 2 else " ".join(rnd.sample(WORDS, 2))
                        return "GET", "/v1/history", {"params": {"q": q, "limit": 20}}

                    def generate(i: int):
                        return (
                            "POST",
                            "/v1/generations",
                            {"json": {"prompt": f"a {WORDS[i % len(WORDS)]} at dusk"}},
                        )

                    await _load(c, history, min(50, requests), concurrency)  # warm up
                    hist = await _load(c, history, requests, concurrency)
                    gen = await _load(c, generate, requests, concurrency)
            finally:
                await server.stop()
        finally:
            await engine.stop()
    return {"bench": "web_api", "concurrency": concurrency, "requests": requests, "rows": rows,
            "history": hist, "generations": gen, "server": "uvicorn in-process, runner off"}  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.requests, args.concurrency, args.rows))))
