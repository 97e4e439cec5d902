"""Result-cache benchmark: submission → posted for a cache hit vs a fresh render, on the tiny model.

python -m bench.cache [--runs 5] [--steps 20] [--size 64]

Both paths go through Engine.submit → queue → runner → 'generate' handler → JobResult, then what a front does
to post it: read the JobResult (bot.usecases.jobs.job_output), read the image files it uploads, and mark the job
posted. The fresh renders use a new seed each (the model already loaded), the hits repeat one fixed-seed
request. Prints ONE JSON line with the medians (ms) and hit/fresh ratio (target ≤ 0.02).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bot.usecases.jobs import job_output
from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.config_quality import Scoring
from engine.core import Engine
from engine.runtime.diffusion.testmodels import ensure_tiny_safety_checker, ensure_tiny_sd

USER = 1


async def posted(engine: Engine, job_id: int, user_id: int = USER) -> dict:
    """Wait for the job and post it as a front does (JobResult, image bytes, mark posted); its result."""
    job = await engine.wait(job_id, 300)
    if job.state != "done" or job.result is None:
        raise RuntimeError(f"job #{job.id} {job.state}: {job.error}")
    for path in job_output(job).images:
        Path(path).read_bytes()
    await engine.jobs.mark_posted(job.id)
    return job.result


async def _timed(engine: Engine, payload: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = await posted(engine, await engine.submit("generate", payload, user_id=USER))
    return (time.perf_counter() - t0) * 1000, result


def bench_settings(data_dir: str, models: Path, **sections: object) -> Settings:
    """CPU settings for the tiny-model benches (no batching wait, roomy quotas, no CLIP scoring)."""
    return Settings(
        paths=Paths(data_dir=data_dir, demo_models=str(models)),
        gpu=Gpu(device="cpu"),
        generation=Generation(max_side=512, max_pixels=512 * 512, max_steps=100),
        queue=Queue(batch_window_ms=0, daily_quota=10_000, max_per_user=4),
        scoring=Scoring(enabled=False),
        **sections,
    )


async def save_bench_preset(engine: Engine, models: Path, steps: int, size: int) -> None:
    """The image preset "bench": the tiny SD1.5 pipeline at `steps` and `size`."""
    preset = {
        "family": "sd15", "steps": steps, "cfg": 5.0, "scheduler": "euler", "width": size, "height": size,
        "model": str(ensure_tiny_sd(models / "tiny-sd15")),
        "safety_checker": str(ensure_tiny_safety_checker(models / "tiny-safety")),
    }  # fmt: skip
    await engine.store.presets.save("image", "bench", preset)


async def bench(runs: int, steps: int, size: int, models: Path) -> dict:
    """Median fresh-render and cache-hit latencies (submission → posted) and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = await Engine.start(bench_settings(tmp, models), poll_s=0.05)
        try:
            await save_bench_preset(engine, models, steps, size)
            ask = {"prompt": "a lighthouse on a cliff at dusk", "preset": "bench"}
            await _timed(engine, {**ask, "seed": 999_999})  # load the model
            fresh = [(await _timed(engine, {**ask, "seed": 1000 + i}))[0] for i in range(runs)]
            hits = []
            for _ in range(runs * 4):
                ms, result = await _timed(engine, {**ask, "seed": 1000})
                if not result["params"].get("cached"):
                    raise RuntimeError("a fixed-seed repeat was not answered from the cache")
                hits.append(ms)
        finally:
            await engine.stop()
    f, h = statistics.median(fresh), statistics.median(hits)
    return {
        "bench": "cache", "span": "submit→posted", "device": "cpu", "steps": steps, "size": size, "runs": runs,
        "fresh_ms_p50": round(f, 1), "hit_ms_p50": round(h, 1), "hit_ms_max": round(max(hits), 1),
        "ratio": round(h / f, 4), "target": 0.02, "ok": h / f <= 0.02,
    }  # fmt: skip


def main() -> None:
    """Run the benchmark and print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--models", default=str(Path(tempfile.gettempdir()) / "atelier-bench-models"))
    a = p.parse_args()
    print(json.dumps(asyncio.run(bench(a.runs, a.steps, a.size, Path(a.models)))))


if __name__ == "__main__":
    main()
