"""IP-Adapter on a loaded pipeline: load the adapter a request's reference names, weight it, unload exactly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.guidance import ReferenceSpec, style_layers
from engine.runtime.diffusion.resolve import resolve_model

log = logging.getLogger("atelier.engine")


def encoder_folder(adapter: dict[str, str]) -> str:
    """The image encoder's folder inside the adapter repo (diffusers' rule: a bare name sits in `subfolder`)."""
    enc = adapter["image_encoder"]
    return enc if "/" in enc else str(Path(adapter.get("subfolder") or "", enc).as_posix())


class ReferenceManager:
    """Tracks the IP-Adapter in the pipeline; reloads only when a request names another one."""

    def __init__(self, who: str, models_dir: Path | None = None) -> None:
        self.who = who
        self.models_dir = models_dir
        self.loaded: str | None = None  # key of the loaded adapter

    def _resolve(self, adapter: dict[str, str]) -> Path:
        sub = adapter.get("subfolder") or ""
        weight = f"{sub}/{adapter['weight']}" if sub else adapter["weight"]
        patterns = [weight, f"{encoder_folder(adapter)}/*"]
        return resolve_model(adapter["model"], f"{self.who} IP-Adapter", self.models_dir, patterns=patterns)

    def apply(self, pipe: Any, ref: ReferenceSpec | None) -> bool:
        """Make `ref`'s adapter active at its scale (None or a Redux reference removes it); True when the
        pipeline's parts changed."""
        if ref is None or ref.via != "ip-adapter":
            return self.clear(pipe)
        key = repr(sorted(ref.adapter.items()))
        changed = False
        if key != self.loaded:
            self.clear(pipe)
            path = self._resolve(ref.adapter)
            try:
                pipe.load_ip_adapter(
                    str(path),
                    subfolder=ref.adapter.get("subfolder") or "",
                    weight_name=ref.adapter["weight"],
                    image_encoder_folder=ref.adapter["image_encoder"],
                )
            except (ValueError, KeyError, RuntimeError, OSError) as e:
                self.clear(pipe, force=True)
                raise InvalidRequest(f"the IP-Adapter at {path} cannot be applied to {self.who}: {e}") from e
            self.loaded, changed = key, True
            log.info("loaded IP-Adapter %s on %s", path, self.who)
        scale = style_layers(pipe.unet, ref.scale) if ref.mode == "style" else ref.scale
        try:
            pipe.set_ip_adapter_scale(scale)
        except (ValueError, KeyError) as e:
            raise InvalidRequest(f"{self.who}: cannot weight the reference as {ref.mode}: {e}") from e
        return changed

    def clear(self, pipe: Any, force: bool = False) -> bool:
        """Remove the adapter (attention processors and image encoder); True when one was loaded."""
        if (self.loaded is None and not force) or pipe is None:
            return False
        try:
            pipe.unload_ip_adapter()
        except (ValueError, AttributeError, KeyError):
            if not force:
                raise
        log.info("unloaded the IP-Adapter from %s", self.who)
        self.loaded = None
        return True


def blend_embeds(pipe: Any, ref: ReferenceSpec | None, cfg: float, kw: dict[str, Any]) -> None:
    """/blend: several reference images become one IP-Adapter embedding, their weighted mean (in `kw`).

    The weights are relative (normalised to sum 1); the adapter's scale still sets how strongly the blend
    steers. One image (no `others`) leaves `kw` as it is: diffusers encodes `ip_adapter_image` itself.
    """
    if ref is None or not ref.others or ref.via != "ip-adapter":
        return
    import torch
    from diffusers.models.embeddings import ImageProjection

    layers = pipe.unet.encoder_hid_proj.image_projection_layers
    hidden = not isinstance(layers[0], ImageProjection)
    images = [ref.image, *ref.others]
    weights = list(ref.weights) or [1.0] * len(images)
    device = pipe._execution_device
    pos, neg = None, None
    with torch.no_grad():
        for image, w in zip(images, weights, strict=True):
            embeds, negative = pipe.encode_image(image.convert("RGB"), device, 1, hidden)
            part = embeds * (w / sum(weights))
            pos = part if pos is None else pos + part
            neg = negative if neg is None else neg  # the encoding of a blank image: the same for every image
    assert pos is not None and neg is not None
    do_cfg = cfg > 1.0 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
    single = torch.cat([neg[None], pos[None]]) if do_cfg else pos[None]
    kw.pop("ip_adapter_image", None)
    kw["ip_adapter_image_embeds"] = [single]
