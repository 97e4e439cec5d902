"""Engine overhead benchmark; prints ONE JSON line (never asserts).

(a) Atelier end to end (enqueue -> runner -> arbiter -> tiny SD -> PNG + history) vs a raw diffusers pipeline
    call with the same settings (same weights, scheduler, seed, size, steps, safety checker), interleaved.
(b) LLM reload after eviction through the arbiter vs a raw `Llama(**same options)` load (SmolLM2-135M GGUF).

python -m bench.engine [--cases 64x4,128x10] [--repeats 7] [--llm-repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import Generation, Gpu, Paths, Settings
from engine.core import Engine
from engine.runtime.arbiter import MIB

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
PRESET = {"family": "sd15", "scheduler": "euler", "cfg": 5.0, "negative": "", "style": ""}


def _cache() -> Path:
    default = Path(tempfile.gettempdir()) / f"atelier-test-models-{os.getuid()}"
    return Path(os.environ.get("ATELIER_BENCH_CACHE", default))


def raw_pipeline(sd: Path, safety: Path, device: str, dtype: Any) -> Any:
    """The plain diffusers pipeline with the same weights, Euler scheduler and the same safety checker."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    pipe = StableDiffusionPipeline.from_pretrained(
        sd,
        safety_checker=StableDiffusionSafetyChecker.from_pretrained(safety),
        feature_extractor=CLIPImageProcessor.from_pretrained(safety),
        torch_dtype=dtype,
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def raw_call(pipe: Any, size: int, steps: int, seed: int) -> Any:
    """One raw pipeline call; returns the PIL image."""
    import torch

    out = pipe(
        prompt=PROMPT,
        num_inference_steps=steps,
        guidance_scale=PRESET["cfg"],
        width=size,
        height=size,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    return out.images[0]


async def atelier_call(svc: Engine, size: int, steps: int, seed: int) -> str:
    """One job through the whole stack; returns the PNG path."""
    payload = {
        "prompt": PROMPT,
        "preset": "bench",
        "width": size,
        "height": size,
        "steps": steps,
        "seed": seed,
    }
    job = await svc.wait(await svc.submit("generate", payload, user_id=1, guild_id=1))
    if job.state != "done":
        raise RuntimeError(f"bench job {job.id} {job.state}: {job.error}")
    return job.result["images"][0]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


async def diffusion(svc: Engine, demo: dict[str, Path], cases: list[tuple[int, int]], repeats: int) -> list:
    """Interleaved medians per (size, steps): Atelier end to end vs the raw pipeline."""
    from PIL import Image

    from engine.runtime.diffusion.dtypes import pick_dtype

    device = svc.arbiter.device
    pipe = raw_pipeline(
        demo["sd15"], demo["safety"], device, pick_dtype(svc.settings.gpu.dtype, device, "sd15")
    )
    out = []
    for size, steps in cases:
        await atelier_call(svc, size, steps, 0)  # warm-up: load, first-call allocations
        raw_call(pipe, size, steps, 0)
        ours, raw, equal = [], [], True
        for i in range(repeats):
            order = ("atelier", "raw") if i % 2 == 0 else ("raw", "atelier")
            for which in order:
                _sync(device)
                t0 = time.perf_counter()
                if which == "atelier":
                    path = await atelier_call(svc, size, steps, 100 + i)
                    _sync(device)
                    ours.append(time.perf_counter() - t0)
                else:
                    image = raw_call(pipe, size, steps, 100 + i)
                    _sync(device)
                    raw.append(time.perf_counter() - t0)
            equal &= bool(np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(image)))
        a, r = statistics.median(ours), statistics.median(raw)
        out.append(
            {
                "size": f"{size}x{size}",
                "steps": steps,
                "atelier_ms": round(a * 1000, 1),
                "raw_ms": round(r * 1000, 1),
                "ratio": round(a / r, 3),
                "overhead_ms": round((a - r) * 1000, 1),
                "pixels_equal": equal,
                "n": repeats,
            }
        )
    return out


class Filler:
    """A Managed stand-in that needs the whole budget, so using it evicts everything else."""

    kind = "diffusion"

    def __init__(self, name: str, nbytes: int) -> None:
        self.name, self.nbytes, self._loaded = name, nbytes, False

    def estimate_bytes(self) -> int:
        return self.nbytes

    def load(self, device: str) -> None:
        self._loaded = True

    def unload(self) -> None:
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def close(self) -> None:
        self.unload()


async def llm(svc: Engine, repeats: int) -> dict:
    """Reload after eviction through the arbiter vs a raw Llama(**the same load options), interleaved."""
    from llama_cpp import Llama

    model = await svc.models.llm_model("smollm2-135m")
    arbiter = svc.arbiter
    filler = Filler("bench-filler", arbiter.budget)
    arbiter.register(filler)
    async with arbiter.use(model.name):
        options = dict(model.load_options(arbiter.device))
    reload, raw, swap = [], [], []
    for i in range(repeats + 1):
        async with arbiter.use(filler.name):  # evicts the LLM
            pass
        t0 = time.perf_counter()
        async with arbiter.use(model.name):  # evicts the filler (a no-op) and reloads the LLM
            t_swap = time.perf_counter() - t0
        async with arbiter.use(filler.name):
            pass
        await arbiter.unload(filler.name)  # the budget is free again: the next load is a pure reload
        t0 = time.perf_counter()
        async with arbiter.use(model.name):
            t_reload = time.perf_counter() - t0
        t0 = time.perf_counter()
        direct = await asyncio.to_thread(Llama, **options)
        t_raw = time.perf_counter() - t0
        await asyncio.to_thread(direct.close)
        if i > 0:  # the first round warms the page cache
            reload.append(t_reload)
            raw.append(t_raw)
            swap.append(t_swap)
    r, d = statistics.median(reload), statistics.median(raw)
    return {
        "model": Path(options["model_path"]).name,
        "arbiter_reload_ms": round(r * 1000, 1),
        "raw_load_ms": round(d * 1000, 1),
        "ratio": round(r / d, 3),
        "arbiter_swap_ms": round(statistics.median(swap) * 1000, 1),
        "n": repeats,
    }


def _cases(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        size, steps = part.lower().split("x")
        out.append((int(size), int(steps)))
    return out


async def main(args: argparse.Namespace) -> dict:
    from engine.runtime.diffusion.testmodels import ensure_demo_models

    with tempfile.TemporaryDirectory() as tmp:
        demo = ensure_demo_models(_cache())
        settings = Settings(
            paths=Paths(data_dir=tmp, demo_models=str(_cache())),
            gpu=Gpu(device=args.device),
            generation=Generation(max_side=1024, max_pixels=1024 * 1024, max_steps=100),
        )
        svc = await Engine.start(settings)
        try:
            preset = {**PRESET, "model": str(demo["sd15"]), "safety_checker": str(demo["safety"])}
            await svc.store.presets.save("image", "bench", preset)
            rows = await diffusion(svc, demo, _cases(args.cases), args.repeats)
            llm_row = await llm(svc, args.llm_repeats)
            device = svc.arbiter.device
            budget_mib = svc.arbiter.budget // MIB
        finally:
            await svc.stop()
    compute = max(rows, key=lambda r: r["raw_ms"])
    return {
        "bench": "engine",
        "device": device,
        "threads": _threads(),
        "budget_mib": budget_mib,
        "diffusion": rows,
        "diffusion_compute_dominated": {k: compute[k] for k in ("size", "steps", "ratio", "overhead_ms")},
        "llm": llm_row,
        "targets": {"diffusion_ratio": 1.03, "llm_reload_ratio": 1.2},
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n")[0])
    p.add_argument(
        "--cases",
        default="64x4,128x10",
        help="SIZExSTEPS,... (square images; 256x10 takes minutes on 2 cores)",
    )
    p.add_argument("--repeats", type=int, default=7, help="interleaved pairs per case")
    p.add_argument("--llm-repeats", type=int, default=7)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    print(json.dumps(asyncio.run(main(p.parse_args()))))


if __name__ == "__main__":
    cli()
