"""Creation paths benchmark; prints ONE JSON line (never asserts).

For each case (instruction edit, draft, enhance, animate, blend, blend-redux, edit-klein, edit-multi; others
append theirs to CASES) Atelier end to end (submit -> runner -> arbiter -> tiny model -> PNG + history) vs the
raw diffusers pipeline call on the same tiny model, settings and seed, in interleaved pairs (the order alternates),
as medians and the median of the pairs' ratios (target <= 1.05) with its 90 % bootstrap interval: each pair
runs back to back, so a shared machine's slow drift cancels out of its ratio. Atelier's time runs from submit to
the delivered file; reading that file back for the pixel check is not timed. Also the draft's time as a
fraction of the full render at the same size (target <= 0.25).
Work the raw call does not do is off, as a user may set it: the safety checker always, CLIP scoring unless
--scoring (it then adds one CLIP image+text pass per image).

python -m bench.creation [--size 128] [--repeats 11] [--min-seconds 60] [--only edit,draft] [--device auto] [--scoring]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.creation_blend import BLEND_CASES, prepare_blend
from bench.creation_video import animate_atelier, animate_raw, prepare_video
from engine.config import Generation, Gpu, Paths, Queue, Settings
from engine.config_quality import Scoring
from engine.core import Engine

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
INSTRUCTION = "make it night"
FULL = {"model": "demo:tiny-sd", "family": "sd15", "scheduler": "euler", "steps": 8, "cfg": 5.0}
DRAFT = {"model": "demo:tiny-sd", "family": "sd15", "scheduler": "euler", "steps": 1, "cfg": 0.0}
EDIT = {"model": "demo:tiny-kontext", "family": "kontext", "scheduler": "default", "steps": 8, "cfg": 2.5}
ENHANCE_STRENGTH = 0.5
# seeds of their own: a draft whose prompt and seed a measured pair used would come from the result cache
FRACTION_SEED = 1_000_000


@dataclass
class Bench:
    """What every case works with: the engine, the raw pipelines (by name), the size and shared inputs."""

    svc: Engine
    size: int
    device: str
    raw: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    async def job(self, payload: dict) -> dict:
        """One 'generate' job through the whole stack; its result."""
        job = await self.svc.wait(await self.svc.submit("generate", payload, user_id=1, guild_id=1), 600)
        if job.state != "done":
            raise RuntimeError(f"bench job {job.id} {job.state}: {job.error}")
        if job.result["params"].get("cached"):  # a timing must never be a cache hit
            raise RuntimeError(f"bench job {job.id} came from the result cache: its prompt and seed ran before")
        return job.result


@dataclass(frozen=True)
class Case:
    """One creation path: Atelier's call and the raw diffusers call with the same settings (both -> an image)."""

    name: str
    atelier: Callable[[Bench, int], Awaitable[str]]  # the path of the first delivered file
    raw: Callable[[Bench, int], Image.Image]


def _gen(seed: int) -> list[Any]:
    import torch

    return [torch.Generator("cpu").manual_seed(seed)]


def _np_image(out: Any) -> Image.Image:
    from engine.runtime.diffusion.denoise import to_pil

    return to_pil(out.images[0])


async def _first(b: Bench, payload: dict) -> str:
    return str((await b.job(payload))["images"][0])


def delivered(path: str) -> Image.Image:
    """The first image of a delivered file (a PNG, or an MP4's first frame), read after the timing."""
    if path.endswith(".mp4"):
        from engine.video import read_frames

        return Image.fromarray(read_frames(path)[0])
    with Image.open(path) as im:
        return im.convert("RGB")


# ----- edit: FLUX.1 Kontext follows an instruction on a source image -----
async def edit_atelier(b: Bench, seed: int) -> str:
    payload = {"prompt": INSTRUCTION, "edit": True, "preset": "bench-edit", "seed": seed}
    return await _first(b, payload | {"source_image": b.inputs["source_path"]})


def edit_raw(b: Bench, seed: int) -> Image.Image:
    s = b.size
    out = b.raw["edit"](
        image=b.inputs["source"], prompt=INSTRUCTION, num_inference_steps=EDIT["steps"], guidance_scale=EDIT["cfg"],
        width=s, height=s, max_area=s * s, _auto_resize=False, max_sequence_length=64, generator=_gen(seed),
        output_type="np",
    )  # fmt: skip
    return _np_image(out)


# ----- draft: the draft preset (1 step, no guidance) -----
async def draft_atelier(b: Bench, seed: int) -> str:
    return await _first(b, {"prompt": PROMPT, "draft": True, "seed": seed})


def _txt2img(b: Bench, preset: dict, seed: int) -> Image.Image:
    s = b.size
    out = b.raw["sd"](
        prompt=PROMPT, num_inference_steps=preset["steps"], guidance_scale=preset["cfg"], width=s, height=s,
        generator=_gen(seed), output_type="np",
    )  # fmt: skip
    return _np_image(out)


def draft_raw(b: Bench, seed: int) -> Image.Image:
    return _txt2img(b, DRAFT, seed)


# ----- enhance: img2img of the draft with the full preset, same prompt and seed -----
async def enhance_atelier(b: Bench, seed: int) -> str:
    from bot.usecases.creation import enhance_payload

    payload = await enhance_payload(b.svc, b.inputs["draft_job"], 0, 1, 1)
    return await _first(b, payload | {"seed": seed})


def enhance_raw(b: Bench, seed: int) -> Image.Image:
    out = b.raw["img2img"](
        prompt=PROMPT, image=b.inputs["draft_image"], strength=ENHANCE_STRENGTH, num_inference_steps=FULL["steps"],
        guidance_scale=FULL["cfg"], generator=_gen(seed), output_type="np",
    )  # fmt: skip
    return _np_image(out)


CASES: list[Case] = [
    Case("edit", edit_atelier, edit_raw),
    Case("draft", draft_atelier, draft_raw),
    Case("enhance", enhance_atelier, enhance_raw),
    Case("animate", animate_atelier, animate_raw),  # bench.creation_video
    *(Case(name, ours, raw) for name, ours, raw in BLEND_CASES),  # bench.creation_blend: blend, Klein edits
]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


async def _timed(b: Bench, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(b.device)
    t0 = time.perf_counter()
    out = fn()
    if asyncio.iscoroutine(out):
        out = await out
    _sync(b.device)
    return time.perf_counter() - t0, out


def _ci90(ratios: list[float], draws: int = 2000) -> list[float]:
    """A 90 % bootstrap interval of the median pair ratio (fixed seed: the same pairs give the same interval)."""
    r = np.asarray(ratios)
    picks = np.random.default_rng(0).integers(0, len(r), size=(draws, len(r)))
    medians = np.median(r[picks], axis=1)
    return [round(float(np.percentile(medians, 5)), 3), round(float(np.percentile(medians, 95)), 3)]


async def measure(b: Bench, case: Case, repeats: int, min_s: float = 0.0) -> dict:
    """Interleaved pairs of one case (a warm-up pair first): the medians and the median of the pairs' ratios,
    with its 90 % bootstrap interval.

    At least `repeats` pairs, then more until the case has run `min_s` seconds (at most 12 × repeats): a short
    call's ratio is the noisiest on a shared machine.
    """
    await case.atelier(b, 0)
    case.raw(b, 0)
    ours, raw, equal = [], [], True
    start = time.perf_counter()
    for i in range(12 * repeats):
        if i >= repeats and time.perf_counter() - start >= min_s:
            break
        order = ("atelier", "raw") if i % 2 == 0 else ("raw", "atelier")
        got: dict[str, Image.Image] = {}
        for which in order:
            seed = 100 + i
            fn = (
                (lambda s=seed: case.atelier(b, s)) if which == "atelier" else (lambda s=seed: case.raw(b, s))
            )
            t, out = await _timed(b, fn)
            got[which] = delivered(out) if which == "atelier" else out  # decoding the file is not timed
            (ours if which == "atelier" else raw).append(t)
        equal &= bool(np.array_equal(np.asarray(got["atelier"]), np.asarray(got["raw"])))
    a, r = statistics.median(ours), statistics.median(raw)
    ratios = [x / y for x, y in zip(ours, raw, strict=True)]  # each pair ran back to back
    return {"atelier_ms": round(a * 1000, 1), "raw_ms": round(r * 1000, 1), "ratio": round(statistics.median(ratios), 3),
            "ratio_ci90": _ci90(ratios), "ratio_of_medians": round(a / r, 3), "pixels_equal": equal,
            "n": len(ours)}  # fmt: skip


async def draft_fraction(b: Bench, repeats: int) -> dict:
    """The draft's time over the full render's (txt2img, same size and prompt), both through Atelier."""
    drafts, fulls = [], []
    for i in range(repeats):
        t, _ = await _timed(b, lambda s=FRACTION_SEED + i: draft_atelier(b, s))
        drafts.append(t)
        t, _ = await _timed(
            b, lambda s=FRACTION_SEED + i: _first(b, {"prompt": PROMPT, "preset": "bench-full", "seed": s})
        )
        fulls.append(t)
    d, f = statistics.median(drafts), statistics.median(fulls)
    return {"draft_ms": round(d * 1000, 1), "full_ms": round(f * 1000, 1), "fraction": round(d / f, 3)}


def _cache() -> Path:
    default = Path(tempfile.gettempdir()) / f"atelier-test-models-{os.getuid()}"
    return Path(os.environ.get("ATELIER_BENCH_CACHE", default))


async def prepare(svc: Engine, size: int) -> Bench:
    """Bench presets in the store, the raw pipelines from the same folders and the shared inputs."""
    import diffusers

    from engine.runtime.diffusion.dtypes import dtype_kwargs, pick_dtype

    for name, preset in (("bench-full", FULL), ("bench-draft", DRAFT), ("bench-edit", EDIT)):
        await svc.store.presets.save("image", name, {**preset, "width": size, "height": size})
    device = svc.arbiter.device
    b = Bench(svc, size, device)
    folders = {
        k: await svc.models.demo.resolve(v, "bench")
        for k, v in (("sd", "demo:tiny-sd"), ("edit", EDIT["model"]))
    }
    kw = dtype_kwargs(pick_dtype(svc.settings.gpu.dtype, device, "sd15"))
    sd = diffusers.StableDiffusionPipeline.from_pretrained(folders["sd"], safety_checker=None, **kw).to(
        device
    )
    sd.scheduler = diffusers.EulerDiscreteScheduler.from_config(sd.scheduler.config)
    ekw = dtype_kwargs(pick_dtype(svc.settings.gpu.dtype, device, "kontext"))
    b.raw = {"sd": sd, "img2img": diffusers.StableDiffusionImg2ImgPipeline.from_pipe(sd),
             "edit": diffusers.FluxKontextPipeline.from_pretrained(folders["edit"], **ekw).to(device)}  # fmt: skip
    for pipe in b.raw.values():
        pipe.set_progress_bar_config(disable=True)
    await prepare_video(b)
    source = Image.new("RGB", (size, size), (200, 40, 40))
    source.paste((20, 20, 220), (0, 0, size // 2, size // 2))
    path = svc.settings.path("data_dir") / "bench-source.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    source.save(path)
    draft_id = await svc.submit(
        "generate", {"prompt": PROMPT, "draft": True, "seed": 7}, user_id=1, guild_id=1
    )
    draft = await svc.wait(draft_id, 600)
    b.inputs = {"source": source, "source_path": str(path), "draft_job": draft,
                "draft_image": Image.open(draft.result["images"][0]).convert("RGB")}  # fmt: skip
    await prepare_blend(b)
    return b


async def main(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            paths=Paths(data_dir=tmp, demo_models=str(_cache())),
            gpu=Gpu(device=args.device),
            generation=Generation(
                max_side=1024, max_pixels=1024 * 1024, max_steps=100, safety="off", edit_preset="bench-edit",
                draft_preset="bench-draft", enhance_preset="bench-full", enhance_strength=ENHANCE_STRENGTH,
            ),
            scoring=Scoring(enabled=args.scoring),
            queue=Queue(daily_quota=100_000),  # one bench user submits hundreds of jobs
        )  # fmt: skip
        svc = await Engine.start(settings)
        try:
            b = await prepare(svc, args.size)
            wanted = [c for c in CASES if not args.only or c.name in args.only.split(",")]
            rows = {c.name: await measure(b, c, args.repeats, args.min_seconds) for c in wanted}
            fraction = await draft_fraction(b, args.repeats)
            device = svc.arbiter.device
        finally:
            await svc.stop()
    return {
        "bench": "creation",
        "device": device,
        "size": f"{args.size}x{args.size}",
        "scoring": args.scoring,
        "ratios": {name: row["ratio"] for name, row in rows.items()},
        "cases": rows,
        "draft_vs_full": fraction,
        "targets": {"ratio": 1.05, "draft_fraction": 0.25},
    }


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.creation", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128, help="square image side (multiple of 16)")
    p.add_argument("--repeats", type=int, default=11, help="interleaved pairs per case")
    p.add_argument("--min-seconds", type=float, default=60.0, help="add pairs until a case ran this long")
    p.add_argument("--only", default="", help="comma-separated case names")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--scoring", action="store_true", help="score every image with CLIP, as a default install does")
    print(json.dumps(asyncio.run(main(p.parse_args()))))


if __name__ == "__main__":
    cli()
