"""Several compatible requests in one pipeline call: prompts, negatives and generators as per-image lists.

Requests are compatible when everything the pipeline shares across a batch is equal (family, size, steps,
scheduler, cfg, LoRAs, txt2img mode, and whether a negative prompt is given); see `compat_key`. Each request
still gets exactly the images its own seeds give when it runs alone (up to batched float rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.runtime.diffusion import denoise, oom
from engine.runtime.diffusion.errors import Cancelled, InvalidRequest
from engine.runtime.diffusion.preview import latent_preview
from engine.runtime.diffusion.request import GenerationRequest
from engine.runtime.diffusion.safety import apply_policy, check_blank
from engine.runtime.diffusion.schedulers import scheduler_for
from engine.runtime.diffusion.weighting import has_weighting

if TYPE_CHECKING:
    from PIL import Image

    from engine.runtime.diffusion.pipeline import DiffusionModel

Progress = Callable[[int, int, Any], None] | None
ShouldCancel = Callable[[], bool] | None
Outcome = list[Any] | BaseException  # the request's images, or the exception it alone raised


def compat_key(req: GenerationRequest) -> tuple | None:
    """What must be equal for requests to share one pipeline call; None when `req` can never be batched."""
    if req.mode != "txt2img" or req.guided or has_weighting(req.prompt) or has_weighting(req.negative):
        return None
    loras = tuple((str(r), float(s)) for r, s in req.loras)
    return (
        req.family,
        req.width,
        req.height,
        req.steps,
        req.scheduler,
        float(req.cfg),
        loras,
        tuple(req.embeddings),
        req.vae,
        req.negative == "",
    )


def _group_callback(
    family: str,
    size: tuple[int, int],
    every: int,
    owners: list[int],
    progresses: list[Progress],
    cancels: list[ShouldCancel],
    fallback_total: int,
) -> Callable[..., dict]:
    """A step callback for one chunk: image k of the chunk belongs to request owners[k]."""
    firsts = {o: k for k, o in reversed(list(enumerate(owners)))}  # request -> its first image in the chunk

    def cb(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        if all(c is not None and c() for c in (cancels[o] for o in firsts)):
            raise Cancelled(f"every request of the batch was cancelled after step {step + 1}")
        total = int(getattr(pipe, "num_timesteps", 0) or fallback_total)
        n = step + 1
        latents = kwargs.get("latents")
        for owner, k in firsts.items():
            fn = progresses[owner]
            if fn is None:
                continue
            preview = None
            if n % every == 0 and latents is not None:
                preview = latent_preview(latents[k : k + 1], family, size)
            fn(n, total, preview)
        return kwargs

    return cb


def _finish(
    model: DiffusionModel, req: GenerationRequest, arrays: list[Any], cancel: ShouldCancel
) -> Outcome:
    """Blank check, PIL conversion and the request's own safety policy, as DiffusionModel.generate does."""
    try:
        if cancel is not None and cancel():
            raise Cancelled("cancelled while batched with other requests")
        check_blank(arrays, req.seeds())
        images = [denoise.to_pil(a) for a in arrays]
        policy = req.safety or model.settings.generation.safety
        return apply_policy(images, req.seeds(), model.safety, policy)
    except Exception as e:  # noqa: BLE001 - the error belongs to this request only
        return e


def generate_group(
    model: DiffusionModel,
    reqs: list[GenerationRequest],
    progresses: list[Progress] | None = None,
    cancels: list[ShouldCancel] | None = None,
) -> list[Outcome]:
    """Run compatible requests as one pipeline call (blocking); one outcome per request, in order.

    A problem that concerns the whole call (not loaded, incompatible requests, every request cancelled,
    out of memory after every fallback) raises; a problem of one request (blank or withheld image,
    that request cancelled) is returned as its outcome.
    """
    if not reqs:
        return []
    progresses = progresses or [None] * len(reqs)
    cancels = cancels or [None] * len(reqs)
    if not len(reqs) == len(progresses) == len(cancels):
        raise ValueError("reqs, progresses and cancels must have the same length")
    keys = {compat_key(r) for r in reqs}
    if None in keys or len(keys) != 1:
        raise InvalidRequest("only txt2img requests with equal size, steps, scheduler, cfg and LoRAs batch")
    with model._lock:
        for r in reqs:
            model._check(r)
        if all(c is not None and c() for c in cancels):
            raise Cancelled("every request of the batch was cancelled before the first step")
        first = reqs[0]
        base = model._pipes["txt2img"]
        model.loras.apply(base, first.loras)
        if model.addons.apply(base, first.embeddings, first.vae):
            model._drop_derived()
        every = model.settings.generation.preview_every_steps
        entries = [(i, s) for i, r in enumerate(reqs) for s in r.seeds()]  # (request index, seed) per image
        size = (first.width, first.height)

        def run(chunk: list[tuple[int, int]]) -> list[Any]:
            owners = [i for i, _ in chunk]
            cb = _group_callback(first.family, size, every, owners, progresses, cancels, first.steps)
            pipe = model._pipe_for("txt2img")
            pipe.scheduler = scheduler_for(pipe.scheduler, first.scheduler, base.scheduler.config, model.family)
            kw = denoise.pipeline_kwargs(first, [s for _, s in chunk], cb)
            kw["prompt"] = [reqs[i].prompt for i in owners]
            kw["num_images_per_prompt"] = 1
            if "negative_prompt" in kw:
                kw["negative_prompt"] = [reqs[i].negative for i in owners]
            return list(model._call_pipeline(pipe, kw).images)

        model.last_fallbacks = []
        arrays = oom.run_with_fallback(
            run,
            entries,
            vae_low_memory=model._vae_low_memory,
            cpu_offload=model._cpu_offload,
            what=f"{first.width}x{first.height} batch of {len(entries)} ({len(reqs)} requests) with {model.name}",
            record=model.last_fallbacks,
        )
        outcomes: list[Outcome] = []
        pos = 0
        for r, cancel in zip(reqs, cancels, strict=True):
            outcomes.append(_finish(model, r, arrays[pos : pos + r.batch], cancel))
            pos += r.batch
        return outcomes


def images_of(outcome: Outcome) -> list[Image.Image]:
    """The images of an outcome, raising the request's own exception."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
