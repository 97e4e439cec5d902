"""Gallery benchmark: the first grid page and a search at 1,000 and 100,000 stored images.

python -m bench.gallery [--sizes 1000 100000] [--requests 200] [--concurrency 4] [--loads 10]
Seeds a scratch store through WebStore.add_many (one tiny shared PNG and thumbnail), serves the real app
with uvicorn, then measures request latency with httpx at a fixed concurrency (p50/p99, ms; the client is
on the same machine, so this is server time plus a loopback round trip) and, in headless Chromium, the time
from navigation to the first grid thumbnail painted (and the browser's first-contentful-paint).
Prints ONE JSON line. Targets: first page < 300 ms server time and < 2 s in the browser at 100,000 images.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time

import httpx
import uvicorn
from PIL import Image

from bot.usecases import gallery as uc
from bot.web.app import create_app
from engine.config import Gpu, Paths, Settings, Web
from engine.core import Engine

USER = 1001
WORD, BROAD = "lighthouse", "portrait"  # WORD in ~5% of prompts, BROAD in ~80%
FIRST_IMG = "(() => { const i = document.querySelector('#grid .card img'); return !!i && i.complete && i.naturalWidth > 0; })()"  # noqa: E501
# ms from navigation start: first-contentful-paint, and the first grid thumbnail's responseEnd (resource timing)
PAINT = """(() => {
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const img = document.querySelector('#grid .card img');
  const res = img && performance.getEntriesByName(img.currentSrc)[0];
  return fcp && res ? [fcp.startTime, res.responseEnd] : null;
})()"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def seed(engine: Engine, n: int, rng: random.Random) -> float:
    """Insert n generations in batches (seconds taken); every image and thumbnail is one shared tiny file."""
    folder = engine.settings.path("outputs") / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    png, jpg = folder / "shared.png", folder / "shared.thumb.jpg"
    Image.new("RGB", (64, 64), (90, 120, 200)).save(png)
    Image.new("RGB", (64, 64), (90, 120, 200)).save(jpg)
    vocab = [f"w{i}" for i in range(3000)]
    t0, start = time.perf_counter(), time.time() - n
    for lo in range(0, n, 10_000):
        rows = []
        for i in range(lo, min(n, lo + 10_000)):
            words = rng.choices(vocab, k=6) + ([WORD] if rng.random() < 0.05 else [])
            words += [BROAD] if rng.random() < 0.8 else []
            rows.append({"user_id": USER, "prompt": " ".join(words), "seed": i, "preset": "sdxl",
                         "images": [str(png)], "params": {"seeds": [i], "spoilers": [False]},
                         "created_at": start + i, "favorite": rng.random() < 0.02})  # fmt: skip
        await engine.store.web.add_many(rows, thumbs=[str(jpg)] * len(rows))
    return time.perf_counter() - t0


async def server_times(base: str, cookie: str, path: str, requests: int, concurrency: int) -> dict:
    """p50/p99 latency (ms) of GET path with `concurrency` requests in flight."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, cookies={"atelier_session": cookie}) as client:
        assert (await client.get(path)).status_code == 200  # warm up (and check)
        left = iter(range(requests))

        async def worker() -> None:
            for _ in left:
                t0 = time.perf_counter()
                r = await client.get(path)
                lat.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    why = r.text.split('<p class="error">')[-1].split("<")[0] if "error" in r.text else ""
                    key = f"{r.status_code} {why}".strip()
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "errors": errors,
    }


async def browser_times(browser, base: str, engine: Engine, path: str, loads: int) -> dict:
    """Navigation to the first grid thumbnail painted, and first-contentful-paint (ms, p50 and max)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(await uc.login_link(engine, USER))
    wall, fcp, thumb = [], [], []
    for _ in range(loads):
        t0 = time.perf_counter()
        await page.goto(base + path)
        while not await page.evaluate(FIRST_IMG):
            await asyncio.sleep(0.005)
        wall.append((time.perf_counter() - t0) * 1000)
        for _ in range(400):
            if marks := await page.evaluate(PAINT):
                fcp.append(marks[0])
                thumb.append(marks[1])
                break
            await asyncio.sleep(0.005)
    await context.close()
    return {
        "first_grid_img_p50_ms": round(
            statistics.median(wall), 1
        ),  # goto() until the first thumbnail is decoded
        "first_grid_img_max_ms": round(max(wall), 1),
        "fcp_p50_ms": round(statistics.median(fcp), 1) if fcp else None,
        "first_thumb_loaded_p50_ms": round(statistics.median(thumb), 1) if thumb else None,
    }


async def one_size(n: int, args: argparse.Namespace, browser) -> dict:
    with tempfile.TemporaryDirectory(prefix="atelier-gallery-bench-") as tmp:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(paths=Paths(data_dir=tmp), gpu=Gpu(device="cpu"), web=Web(public_url=base))
        engine = await Engine.start(settings, worker=False)
        server = uvicorn.Server(uvicorn.Config(create_app(engine, None, settings), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))  # fmt: skip
        task = asyncio.create_task(server.serve())
        try:
            seconds = await seed(engine, n, random.Random(7))
            while not server.started:
                await asyncio.sleep(0.05)
            cookie, _session = await uc.sign_in(engine, (await uc.login_link(engine, USER)).rsplit("/", 1)[1])
            out: dict = {"images": n, "seed_s": round(seconds, 2)}
            for name, path in (("first_page", "/gallery"), ("search", f"/gallery?q={WORD}"),
                               ("search_broad", f"/gallery?q={BROAD}")):  # fmt: skip
                out[name] = await server_times(base, cookie, path, args.requests, args.concurrency)
                if name != "search_broad":
                    out[name] |= await browser_times(browser, base, engine, path, args.loads)
            return out
        finally:
            server.should_exit = True
            await task
            await engine.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    result: dict = {"bench": "gallery", "load_avg": os.getloadavg()[0], "concurrency": args.concurrency,
                    "requests": args.requests, "sizes": []}  # fmt: skip
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            for n in args.sizes:
                result["sizes"].append(await one_size(n, args, browser))
        finally:
            await browser.close()
    big = max(result["sizes"], key=lambda s: s["images"])
    result["targets_met"] = {
        "first_page_p99_lt_300ms": big["first_page"]["p99_ms"] < 300,
        "browser_first_grid_lt_2s": big["first_page"]["first_grid_img_p50_ms"] < 2000,
    }
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--requests", type=int, default=200, help="requests per measured URL")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    ap.add_argument("--loads", type=int, default=10, help="browser page loads per measured URL")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    print(json.dumps(asyncio.run(main(ap.parse_args()))))
