"""The /blend and FLUX.2 Klein edit cases of bench.creation, each vs raw diffusers on the same tiny model and seed.

- blend: the /blend use-case's payload (2 images, weights 1,0.5) on the tiny SD + tiny IP-Adapter. Raw side: the
  same adapter loaded with `load_ip_adapter`; diffusers has no per-image weight for one adapter's images, so the raw
  call weights them the documented way: `encode_image` per image, their weighted mean as `ip_adapter_image_embeds`.
- blend-redux: the same payload on the tiny FLUX + tiny Redux prior: FluxPriorReduxPipeline (per-image
  `prompt_embeds_scale`) + FluxPipeline.
- edit-klein / edit-multi: an instruction edit on the tiny Flux2KleinPipeline from one / two source images.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from PIL import Image, ImageDraw

from bench.creation_video import Bench as VideoBench
from bot.usecases.blend import BLEND_PROMPT, BLEND_SCALE, blend_payload, parse_weights

BLEND = {"model": "demo:tiny-sd", "family": "sd15", "scheduler": "euler", "steps": 8, "cfg": 5.0}
REDUX = {"model": "demo:tiny-flux", "family": "flux", "redux": "demo:tiny-redux", "scheduler": "default",
         "steps": 8, "cfg": 3.5}  # fmt: skip
KLEIN = {"model": "demo:tiny-klein", "family": "klein", "scheduler": "default", "steps": 8, "cfg": 1.0}
PRESETS = {"bench-blend": BLEND, "bench-redux": REDUX, "bench-klein": KLEIN}
WEIGHTS = "1,0.5"
INSTRUCTION = "put this logo on the mug"


class Bench(VideoBench, Protocol):
    """What the cases need of bench.creation.Bench: the video case's fields, the shared inputs and its job()."""

    inputs: dict[str, Any]

    async def job(self, payload: dict) -> dict: ...


def _raw_image(pipe: Any, seed: int, **kw: Any) -> Image.Image:
    """One raw pipeline call with the seed's CPU generator (as Atelier makes it); its image."""
    import torch

    from engine.runtime.diffusion.denoise import to_pil

    out = pipe(**kw, generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np")
    return to_pil(out.images[0])


async def _first(b: Bench, payload: dict) -> str:
    return str((await b.job(payload))["images"][0])


def _logo(size: int) -> Image.Image:
    """The second image: a yellow disc on green (the first is bench.creation's source)."""
    im = Image.new("RGB", (size, size), (30, 150, 60))
    ImageDraw.Draw(im).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(240, 220, 30))
    return im


def _weights() -> list[float]:
    return parse_weights(WEIGHTS, 2)


async def prepare_blend(b: Bench) -> None:
    """The bench presets, the raw pipelines from the same folders, and the second image (after b.inputs is set)."""
    for name, preset in PRESETS.items():
        await b.svc.store.presets.save("image", name, {**preset, "width": b.size, "height": b.size})
    resolve = b.svc.models.demo.resolve
    folders = {k: await resolve(v, "bench") for k, v in (
        ("sd", "demo:tiny-sd"), ("ip", "demo:tiny-ip-adapter-sd15"), ("flux", "demo:tiny-flux"),
        ("redux", "demo:tiny-redux"), ("klein", "demo:tiny-klein"))}  # fmt: skip
    b.raw |= _raw_pipes(b, folders)
    logo = _logo(b.size)
    path = b.svc.settings.path("data_dir") / "bench-logo.png"
    logo.save(path)
    b.inputs |= {"logo": logo, "logo_path": str(path)}


def _raw_pipes(b: Bench, folders: dict[str, Any]) -> dict[str, Any]:
    import diffusers

    from engine.runtime.control.models import DEMO_IP_ADAPTER
    from engine.runtime.diffusion.dtypes import dtype_kwargs, pick_dtype

    def kw(family: str) -> dict[str, Any]:
        return dtype_kwargs(pick_dtype(b.svc.settings.gpu.dtype, b.device, family))

    sd = diffusers.StableDiffusionPipeline.from_pretrained(folders["sd"], safety_checker=None, **kw("sd15"))
    sd = sd.to(b.device)
    sd.scheduler = diffusers.EulerDiscreteScheduler.from_config(sd.scheduler.config)
    sd.load_ip_adapter(str(folders["ip"]), subfolder="", weight_name=DEMO_IP_ADAPTER["weight"],
                       image_encoder_folder=DEMO_IP_ADAPTER["image_encoder"])  # fmt: skip
    sd.set_ip_adapter_scale(BLEND_SCALE)
    flux = diffusers.FluxPipeline.from_pretrained(folders["flux"], **kw("flux")).to(b.device)
    texts = {k: getattr(flux, k) for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
    prior = diffusers.FluxPriorReduxPipeline.from_pretrained(folders["redux"], **kw("flux"), **texts)
    prior.image_encoder.to(b.device)
    prior.image_embedder.to(b.device)
    klein = diffusers.Flux2KleinPipeline.from_pretrained(folders["klein"], **kw("klein")).to(b.device)
    pipes = {"blend": sd, "redux": flux, "redux-prior": prior, "klein": klein}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


async def _blend_atelier(b: Bench, seed: int, preset: str) -> str:
    paths = [b.inputs["source_path"], b.inputs["logo_path"]]
    payload = await blend_payload(
        b.svc, paths, user_id=1, guild_id=1, weights=WEIGHTS, preset=preset, seed=seed
    )
    return await _first(b, payload)


# ----- blend: IP-Adapter on the tiny SD -----
async def blend_atelier(b: Bench, seed: int) -> str:
    """/blend's payload through the whole stack (IP-Adapter, weights 1,0.5)."""
    return await _blend_atelier(b, seed, "bench-blend")


def _ip_embeds(pipe: Any, images: list[Image.Image], weights: list[float], cfg: float) -> Any:
    """The images' weighted mean IP-Adapter embedding (negative first when guided), as diffusers takes it."""
    import torch
    from diffusers.models.embeddings import ImageProjection

    hidden = not isinstance(pipe.unet.encoder_hid_proj.image_projection_layers[0], ImageProjection)
    pos, neg = None, None
    with torch.no_grad():
        for image, w in zip(images, weights, strict=True):
            embeds, negative = pipe.encode_image(image, pipe._execution_device, 1, hidden)
            part = embeds * (w / sum(weights))
            pos = part if pos is None else pos + part
            neg = negative if neg is None else neg
    assert pos is not None and neg is not None
    return torch.cat([neg[None], pos[None]]) if cfg > 1.0 else pos[None]


def blend_raw(b: Bench, seed: int) -> Image.Image:
    """StableDiffusionPipeline + the same IP-Adapter; the weighted embedding passed as ip_adapter_image_embeds."""
    pipe, images = b.raw["blend"], [b.inputs["source"], b.inputs["logo"]]
    return _raw_image(
        pipe, seed, prompt=BLEND_PROMPT, ip_adapter_image_embeds=[_ip_embeds(pipe, images, _weights(), BLEND["cfg"])],
        num_inference_steps=BLEND["steps"], guidance_scale=BLEND["cfg"], width=b.size, height=b.size,
    )  # fmt: skip


# ----- blend-redux: FLUX Redux prior on the tiny FLUX -----
async def redux_atelier(b: Bench, seed: int) -> str:
    """/blend's payload on a FLUX preset with a Redux prior."""
    return await _blend_atelier(b, seed, "bench-redux")


def redux_raw(b: Bench, seed: int) -> Image.Image:
    """FluxPriorReduxPipeline (each image's share of the weights) then FluxPipeline with its embeddings."""
    import torch

    prior, weights = b.raw["redux-prior"], _weights()
    shares = [w / sum(weights) for w in weights]
    with torch.no_grad():
        emb = prior(
            [b.inputs["source"], b.inputs["logo"]], prompt=[BLEND_PROMPT] * 2, prompt_embeds_scale=shares,
            pooled_prompt_embeds_scale=shares,
        )  # fmt: skip
    cfg = prior.image_encoder.config
    emb.prompt_embeds[:, -((cfg.image_size // cfg.patch_size) ** 2) :] *= BLEND_SCALE  # the image tokens
    return _raw_image(
        b.raw["redux"], seed, prompt_embeds=emb.prompt_embeds, pooled_prompt_embeds=emb.pooled_prompt_embeds,
        num_inference_steps=REDUX["steps"], guidance_scale=REDUX["cfg"], width=b.size, height=b.size,
    )  # fmt: skip


# ----- edit-klein / edit-multi: FLUX.2 Klein instruction edits from one / two source images -----
def _edit_payload(b: Bench, seed: int) -> dict:
    return {"prompt": INSTRUCTION, "edit": True, "preset": "bench-klein", "seed": seed,
            "source_image": b.inputs["source_path"]}  # fmt: skip


async def klein_atelier(b: Bench, seed: int) -> str:
    """An edit job on the Klein preset from the bench's source image."""
    return await _first(b, _edit_payload(b, seed))


async def multi_atelier(b: Bench, seed: int) -> str:
    """The same edit with a second source image (edit_images)."""
    return await _first(b, _edit_payload(b, seed) | {"edit_images": [b.inputs["logo_path"]]})


def _klein(b: Bench, seed: int, images: list[Image.Image]) -> Image.Image:
    pipe = b.raw["klein"]
    return _raw_image(
        pipe, seed, image=images, prompt=INSTRUCTION, num_inference_steps=KLEIN["steps"], guidance_scale=KLEIN["cfg"],
        width=b.size, height=b.size, max_sequence_length=min(512, pipe.tokenizer.model_max_length),
    )  # fmt: skip


def klein_raw(b: Bench, seed: int) -> Image.Image:
    """Flux2KleinPipeline with image=[source]."""
    return _klein(b, seed, [b.inputs["source"]])


def multi_raw(b: Bench, seed: int) -> Image.Image:
    """Flux2KleinPipeline with image=[source, logo]."""
    return _klein(b, seed, [b.inputs["source"], b.inputs["logo"]])


Atelier = Callable[[Any, int], Awaitable[str]]
Raw = Callable[[Any, int], Image.Image]
BLEND_CASES: list[tuple[str, Atelier, Raw]] = [
    ("blend", blend_atelier, blend_raw),
    ("blend-redux", redux_atelier, redux_raw),
    ("edit-klein", klein_atelier, klein_raw),
    ("edit-multi", multi_atelier, multi_raw),
]
