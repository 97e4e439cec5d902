"""EditModel: an instruction-edit preset (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2 Klein) as an arbiter-managed model.

It is a DiffusionModel whose pipeline takes the source image and an instruction ("make it night") instead of
img2img noise: the same load/unload/OOM/safety path, its own pipeline classes and call arguments. Families that
take several source images ("put this logo on the mug") get them as one ordered list: the request's init_image
first, then its edit_images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.runtime.diffusion.dtypes import dtype_kwargs
from engine.runtime.diffusion.errors import InvalidRequest, ModelNotAvailable
from engine.runtime.diffusion.pipeline import DiffusionModel
from engine.runtime.diffusion.request import GenerationRequest

# family -> (edit pipeline, inpaint pipeline or None, most source images per edit)
EDIT_PIPELINES: dict[str, tuple[str, str | None, int]] = {
    "kontext": ("FluxKontextPipeline", "FluxKontextInpaintPipeline", 1),
    "qwen-edit": ("QwenImageEditPipeline", "QwenImageEditInpaintPipeline", 1),
    "qwen-edit-plus": ("QwenImageEditPlusPipeline", None, 3),
    "klein": ("Flux2KleinPipeline", "Flux2KleinInpaintPipeline", 4),  # BFL: up to 4 references for klein
}
EDIT_FAMILIES: tuple[str, ...] = tuple(EDIT_PIPELINES)
_QWEN = ("qwen-edit", "qwen-edit-plus")
KLEIN_MIN_SIDE = 64  # Flux2ImageProcessor refuses a source image with a side below this


def max_edit_images(family: str) -> int:
    """How many source images one edit of `family` takes (1 for the single-image families)."""
    return EDIT_PIPELINES[family][2]


def multi_image_families() -> list[str]:
    """The edit families that take more than one source image."""
    return [f for f in EDIT_FAMILIES if max_edit_images(f) > 1]


def check_image_count(family: str, count: int) -> None:
    """InvalidRequest when an edit of `family` is given more source images than its pipeline takes."""
    most = max_edit_images(family)
    if count <= most:
        return
    if most == 1:
        raise InvalidRequest(
            f"{family} edits take one image; you gave {count}. Attach only the one to change, or use a "
            f"multi-image edit preset ({', '.join(multi_image_families())})"
        )
    raise InvalidRequest(f"{family} takes at most {most} images; you gave {count}")


def is_edit_family(family: str) -> bool:
    """True for the instruction-edit families (EDIT_PIPELINES)."""
    return family in EDIT_PIPELINES


def check_edit(req: GenerationRequest, family: str) -> None:
    """InvalidRequest for an edit the family cannot do: no source, a mask of another size, a mask without inpaint."""
    if req.init_image is None:
        raise InvalidRequest("an instruction edit needs a source image: reply to an image or attach one")
    if req.controls or req.reference is not None:
        raise InvalidRequest("an instruction edit takes no ControlNet or reference image")
    check_image_count(family, 1 + len(req.edit_images))
    if req.mask_image is not None and req.edit_images:
        raise InvalidRequest("a masked edit takes one source image; leave the mask out to edit from several")
    if req.mask_image is not None:
        if req.mask_image.size != req.init_image.size:
            (mw, mh), (sw, sh) = req.mask_image.size, req.init_image.size
            raise InvalidRequest(
                f"the mask is {mw}x{mh} but the image is {sw}x{sh}; they must be the same size"
            )
        if EDIT_PIPELINES[family][1] is None:
            raise InvalidRequest(f"{family} edits take no mask; leave the mask out")


def edit_kwargs(kwargs: dict[str, Any], req: GenerationRequest, family: str, pipe: Any) -> dict[str, Any]:
    """denoise.pipeline_kwargs (img2img/inpaint shaped) rewritten for the family's edit pipeline call."""
    kw = dict(kwargs)
    kw["width"], kw["height"] = req.width, req.height
    if req.mask_image is None:
        kw.pop("strength", None)
    if req.edit_images:  # one ordered list: the source, then the other images
        kw["image"] = [kw["image"], *(im.convert("RGB") for im in req.edit_images)]
    if family == "kontext":
        kw.pop("negative_prompt", None)
        kw["max_area"] = req.width * req.height
        kw["_auto_resize"] = False  # keep the requested size (a preset's 1024² is Kontext's native area)
        kw["max_sequence_length"] = _max_tokens(getattr(pipe, "tokenizer_2", None))
    elif family == "klein":
        kw.pop("negative_prompt", None)  # the pipeline draws its own empty negative for CFG
        kw["max_sequence_length"] = _max_tokens(getattr(pipe, "tokenizer", None))
        images = kw["image"] if isinstance(kw["image"], list) else [kw["image"]]
        kw["image"] = [_at_least(im, KLEIN_MIN_SIDE) for im in images]
        if req.mask_image is not None:
            kw["image"] = kw["image"][0]
    elif family in _QWEN:
        kw["true_cfg_scale"] = kw.pop("guidance_scale", 4.0)
        if kw["true_cfg_scale"] > 1.0:
            kw.setdefault("negative_prompt", " ")
    return kw


def _max_tokens(tokenizer: Any) -> int:
    """The prompt length for the pipeline call: 512, or less when the tokenizer is shorter (the tiny models)."""
    return min(512, int(getattr(tokenizer, "model_max_length", 512) or 512))


def _at_least(image: Any, side: int) -> Any:
    """`image` scaled up (keeping its aspect) so that both sides are at least `side` pixels."""
    from PIL import Image

    w, h = image.size
    if min(w, h) >= side:
        return image
    scale = side / min(w, h)
    return image.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.LANCZOS)


class EditModel(DiffusionModel):
    """An edit preset {name, model, family in EDIT_FAMILIES, steps, cfg, width, height}; see DiffusionModel."""

    kind = "edit"

    def __init__(self, preset: dict[str, Any], *args: Any, **kw: Any) -> None:
        if not is_edit_family(preset.get("family", "")):
            raise InvalidRequest(
                f"preset {preset.get('name')}: '{preset.get('family')}' is not an edit family"
            )
        super().__init__(preset, *args, **kw)
        self._req: GenerationRequest | None = None

    def _from_disk(self, path: Path, dtype: Any) -> Any:
        import diffusers

        cls = getattr(diffusers, EDIT_PIPELINES[self.family][0])
        try:
            return cls.from_pretrained(str(path), **dtype_kwargs(dtype))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelNotAvailable(
                f"{self._who()}: cannot load a {self.family} edit pipeline from {path}: {e}"
            ) from e

    def _pipe_for(self, mode: str, controlnets: list[Any] | None = None) -> Any:
        """The edit pipeline; its inpaint variant (sharing components) when a mask is given."""
        import diffusers

        if controlnets:
            raise InvalidRequest(f"{self._who()} is an edit model: it takes no ControlNet")
        if mode != "inpaint":
            return self._pipes["txt2img"]
        if mode not in self._pipes:
            name = EDIT_PIPELINES[self.family][1]
            if name is None:
                raise InvalidRequest(f"{self._who()}: {self.family} edits take no mask")
            pipe = getattr(diffusers, name).from_pipe(self._pipes["txt2img"])
            pipe.set_progress_bar_config(disable=True)
            self._pipes[mode] = pipe
        return self._pipes[mode]

    def _call_pipeline(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        req = self._req
        if req is None:  # pragma: no cover - denoise always sets it
            return super()._call_pipeline(pipe, kwargs)
        return super()._call_pipeline(pipe, edit_kwargs(kwargs, req, self.family, pipe))

    def denoise(self, req: GenerationRequest, *args: Any, **kw: Any) -> list[Any]:
        """DiffusionModel.denoise after the edit checks (source given, mask of the source's size)."""
        check_edit(req, self.family)
        with self._lock:
            self._req = req
            try:
                return super().denoise(req, *args, **kw)
            finally:
                self._req = None
