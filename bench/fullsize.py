"""Full-size benchmark: Atelier (engine.submit -> runner -> arbiter -> DiffusionModel) vs the raw diffusers call
on the true SD1.5 / SDXL architectures with random weights (bench/fullsize_models.py); prints ONE JSON line.

CPU (default): SD1.5 512², 2 steps, fp32.  CUDA (`--device cuda`): SDXL 1024² 30 steps for each variant
(dtype × channels_last × torch.compile, SDPA attention), the draft preset (sdxl-turbo: 512², 4 steps, cfg 0),
Atelier's peak VRAM and whether the arbiter's unload gives it back.

python -m bench.fullsize [--device cpu|cuda] [--variants fp16,fp16+cl,fp16+cl+compile,bf16+cl+compile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import fullsize_models
from engine.config import Generation, Gpu, Paths, Settings
from engine.core import Engine

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
MIB = 1024 * 1024
CPU_CASE = {"family": "sd15", "size": 512, "steps": 2, "cfg": 7.5, "scheduler": "euler"}
CUDA_CASE = {"family": "sdxl", "size": 1024, "steps": 30, "cfg": 7.0, "scheduler": "euler"}
DRAFT_CASE = {"family": "sdxl", "size": 512, "steps": 4, "cfg": 0.0, "scheduler": "euler_a", "preset": "sdxl-turbo"}
DEFAULT_CUDA_VARIANTS = "bf16,fp16,fp16+cl,fp16+cl+compile"


def parse_variant(text: str) -> dict[str, Any]:
    """'fp16+cl+compile' -> {dtype: float16, channels_last: True, compile: True}."""
    parts = text.split("+")
    dtypes = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
    if parts[0] not in dtypes or not set(parts[1:]) <= {"cl", "compile"}:
        raise SystemExit(f"bad variant '{text}': use fp16|bf16|fp32 followed by +cl and/or +compile")
    return {
        "name": text,
        "dtype": dtypes[parts[0]],
        "channels_last": "cl" in parts,
        "compile": "compile" in parts,
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def raw_pipeline(path: Path, case: dict[str, Any], variant: dict[str, Any], device: str) -> Any:
    """The plain diffusers pipeline from the same folder, with the same optimisations done by hand."""
    import diffusers
    import torch

    kw: dict[str, Any] = {"torch_dtype": getattr(torch, variant["dtype"])}
    if case["family"] == "sd15":
        kw.update(safety_checker=None, requires_safety_checker=False)
    pipe = diffusers.AutoPipelineForText2Image.from_pretrained(str(path), **kw).to(device)
    pipe.set_progress_bar_config(disable=True)
    if variant["channels_last"]:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if variant["compile"]:
        pipe.unet.compile()
    return pipe


def raw_call(pipe: Any, case: dict[str, Any], seed: int) -> np.ndarray:
    """One raw txt2img call with the case's scheduler; returns uint8 pixels."""
    import diffusers
    import torch

    cls = {"euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler"}[case["scheduler"]]
    pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config)
    out = pipe(
        prompt=PROMPT,
        num_inference_steps=case["steps"],
        guidance_scale=case["cfg"],
        width=case["size"],
        height=case["size"],
        generator=[torch.Generator("cpu").manual_seed(seed)],
    )
    return np.asarray(out.images[0].convert("RGB"))


async def atelier_call(svc: Engine, case: dict[str, Any], seed: int) -> np.ndarray:
    """One generate job through engine.submit and the runner; returns the PNG's pixels."""
    from PIL import Image

    payload = {
        "prompt": PROMPT,
        "preset": "fullsize",
        "width": case["size"],
        "height": case["size"],
        "steps": case["steps"],
        "seed": seed,
    }
    job = await svc.wait(await svc.submit("generate", payload, user_id=1, guild_id=1), 3600)
    if job.state != "done":
        raise RuntimeError(f"bench job {job.id} {job.state}: {job.error}")
    from engine.jobs.result import JobResult

    return np.asarray(Image.open(JobResult.of(job).images[0]).convert("RGB"))


async def start_engine(tmp: str, device: str, variant: dict[str, Any]) -> Engine:
    """An Engine whose gpu section turns on the variant's fast paths (safety off on both sides)."""
    gpu = Gpu(
        device=device,
        dtype=variant["dtype"],
        channels_last=variant["channels_last"],
        compile=variant["compile"],
        attention="sdpa",
        ram_budget_mb=32768,
    )
    gen = Generation(max_side=2048, max_pixels=2048 * 2048, max_steps=100, safety="off")
    return await Engine.start(Settings(paths=Paths(data_dir=tmp), gpu=gpu, generation=gen))


async def save_preset(svc: Engine, path: Path, case: dict[str, Any]) -> None:
    """The 'fullsize' image preset: the case's family, scheduler, cfg and size, no negative or style."""
    preset = {
        "family": case["family"],
        "model": str(path),
        "scheduler": case["scheduler"],
        "cfg": case["cfg"],
        "steps": case["steps"],
        "width": case["size"],
        "height": case["size"],
        "negative": "",
        "style": "",
        "safety_checker": str(fullsize_models.tiny_safety()),  # loaded, never run (safety off)
    }
    await svc.store.presets.save("image", "fullsize", preset)


async def time_case(
    svc: Engine, pipe: Any, case: dict[str, Any], repeats: int, device: str
) -> dict[str, Any]:
    """Warm both sides, then `repeats` interleaved pairs (order alternating); medians and pixel equality."""
    t0 = time.perf_counter()
    await atelier_call(svc, case, 0)  # the arbiter loads (and compiles) the model here
    first_s = time.perf_counter() - t0
    raw_call(pipe, case, 0)
    ours: list[float] = []
    raw: list[float] = []
    equal, max_diff = True, 0
    for i in range(repeats):
        order = ("atelier", "raw") if i % 2 == 0 else ("raw", "atelier")
        got: dict[str, np.ndarray] = {}
        for which in order:
            _sync(device)
            t = time.perf_counter()
            if which == "atelier":
                got[which] = await atelier_call(svc, case, 100 + i)
            else:
                got[which] = raw_call(pipe, case, 100 + i)
            _sync(device)
            (ours if which == "atelier" else raw).append(time.perf_counter() - t)
        diff = int(np.abs(got["atelier"].astype(int) - got["raw"].astype(int)).max())
        equal &= diff == 0
        max_diff = max(max_diff, diff)
    a, r = statistics.median(ours), statistics.median(raw)
    return {
        "family": case["family"],
        "size": f"{case['size']}x{case['size']}",
        "steps": case["steps"],
        "atelier_s": round(a, 3),
        "raw_s": round(r, 3),
        "ratio": round(a / r, 4),
        "overhead_ms": round((a - r) * 1000, 1),
        "first_job_s": round(first_s, 2),
        "pixels_equal": equal,
        "max_pixel_diff": max_diff,
        "n": repeats,
    }


async def run_variant(
    device: str, case: dict[str, Any], variant: dict[str, Any], repeats: int
) -> dict[str, Any]:
    """Build (once) the model, start an Engine with the variant, time it against the raw pipeline."""
    from bench.fullsize_vram import vram_check

    saved = "float32" if device == "cpu" else "float16"
    path = fullsize_models.ensure(case["family"], saved)
    with tempfile.TemporaryDirectory() as tmp:
        svc = await start_engine(tmp, device, variant)
        try:
            await save_preset(svc, path, case)
            pipe = await asyncio.to_thread(raw_pipeline, path, case, variant, device)
            row = {"variant": variant["name"], **(await time_case(svc, pipe, case, repeats, device))}
            row["params_m"] = fullsize_models.param_counts(pipe)
            del pipe
            if device.startswith("cuda"):
                row["vram"] = await vram_check(svc, case)
        except Exception as e:  # one failing variant must not hide the others' numbers
            row = {"variant": variant["name"], "family": case["family"], "error": f"{type(e).__name__}: {e}"}
        finally:
            await svc.stop()
    return row


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"bench": "fullsize", "device": args.device, "threads": torch.get_num_threads()}
    if args.device == "cpu":
        variant = parse_variant("fp32")
        rows = [await run_variant("cpu", CPU_CASE, variant, args.repeats or 3)]
        if args.sdxl_cpu:
            sdxl = {**CPU_CASE, "family": "sdxl", "size": 512, "steps": 1}
            rows.append(await run_variant("cpu", sdxl, variant, 1))
        out.update(cases=rows, targets={"ratio": 1.02})
        return out
    out["gpu"] = torch.cuda.get_device_name(0)
    rows = []
    for text in args.variants.split(","):
        rows.append(await run_variant(args.device, CUDA_CASE, parse_variant(text), args.repeats or 3))
    best = parse_variant(args.draft_variant)
    draft = await run_variant(args.device, DRAFT_CASE, best, args.repeats or 5)
    out.update(cases=rows, draft={"preset": DRAFT_CASE["preset"], **draft})
    out["targets"] = {"ratio": 1.02, "sdxl_1024_30_compile_s": 2.0}
    return out


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fullsize", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=0, help="interleaved pairs per case (0 = 3, draft 5)")
    p.add_argument("--variants", default=DEFAULT_CUDA_VARIANTS, help="CUDA variants, comma-separated")
    p.add_argument("--draft-variant", default="fp16+cl+compile", help="variant of the draft preset run")
    p.add_argument("--sdxl-cpu", action="store_true", help="also SDXL 512², 1 step on CPU (~14 GB RAM)")
    print(json.dumps(asyncio.run(main(p.parse_args()))))


if __name__ == "__main__":
    cli()
