"""Which ControlNet, preprocessor and IP-Adapter a request uses, registered with the arbiter on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config_control import Control
from engine.runtime.control import control_type
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.guidance import reference_via

DEMO_PREFIX = "demo:"
IP_ADAPTER_FAMILIES = ("sd15", "sdxl")  # the families with an IP-Adapter (engine.config_control.IpAdapter)
DEMO_IP_ADAPTER = {"subfolder": "", "weight": "ip-adapter.safetensors", "image_encoder": "image_encoder"}


def is_demo(preset: dict[str, Any]) -> bool:
    """True for presets on the offline demo models (they get the tiny demo ControlNets and IP-Adapters)."""
    return str(preset.get("model", "")).startswith(DEMO_PREFIX)


def reference_adapter(preset: dict[str, Any], control: Control) -> dict[str, str]:
    """What takes a stored image preset's reference images: its FLUX Redux prior ({"model"}) on flux, else the
    IP-Adapter description; InvalidRequest naming what is missing for presets without either."""
    family, name = preset.get("family", "sd15"), preset.get("name", "?")
    if reference_via(family) == "redux":
        if not preset.get("redux"):
            raise InvalidRequest(
                f"preset '{name}' ({family}) cannot take reference images or blend: FLUX has no IP-Adapter here "
                'and the preset names no Redux prior (redux = "black-forest-labs/FLUX.1-Redux-dev")'
            )
        return {"model": str(preset["redux"])}
    if family not in IP_ADAPTER_FAMILIES:
        raise InvalidRequest(
            f"preset '{name}' ({family}) cannot take reference images or blend: only sd15 and sdxl presets "
            "(IP-Adapter) and flux presets with a Redux prior can"
        )
    if is_demo(preset):
        return {"model": f"demo:tiny-ip-adapter-{family}", **DEMO_IP_ADAPTER}
    adapter = control.ip_adapter.get(family)
    if adapter is None:
        raise InvalidRequest(
            f"reference images need an IP-Adapter; none is configured for {family} models "
            f"(control.ip_adapter.{family})"
        )
    return adapter.model_dump()


class ControlRegistry:
    """The control-side models of a ModelRegistry (same arbiter, same demo:/pkg: reference rules)."""

    def __init__(self, registry: Any) -> None:
        self.r = registry
        self.settings = registry.settings

    def control_ref(self, preset: dict[str, Any], kind: str) -> str:
        """The ControlNet reference for a stored image preset and control type (InvalidRequest if none)."""
        kind, family = control_type(kind), preset.get("family", "sd15")
        if is_demo(preset):
            if family == "flux":
                raise InvalidRequest("the offline demo has no FLUX ControlNet")
            return f"demo:tiny-controlnet-{family}"
        nets = self.settings.control.controlnets.get(family, {})
        if kind not in nets:
            have = ", ".join(sorted(nets)) or "none"
            raise InvalidRequest(
                f"no {kind} ControlNet is configured for {family} models (configured: {have}); "
                f"set control.controlnets.{family}.{kind} in config.json"
            )
        return nets[kind]

    def adapter(self, preset: dict[str, Any]) -> dict[str, str]:
        """What takes a stored image preset's reference images (see `reference_adapter`)."""
        return reference_adapter(preset, self.settings.control)

    async def resolve(self, req: Any) -> Any:
        """`req` with demo:/pkg: references of its ControlNets and IP-Adapter (or Redux prior) resolved to paths."""
        update: dict[str, Any] = {}
        if req.controls:
            update["controls"] = [
                c.model_copy(update={"model": await self.r._ref(c.model, f"ControlNet '{c.model}'")})
                for c in req.controls
            ]
        if req.reference is not None:
            adapter = dict(req.reference.adapter)
            adapter["model"] = await self.r._ref(adapter["model"], f"the {req.reference.via} reference")
            update["reference"] = req.reference.model_copy(update={"adapter": adapter})
        return req.model_copy(update=update) if update else req

    async def controlnet(self, ref: str, family: str) -> Any:
        """The registered ControlNetWeights for a resolved reference and family."""
        from engine.runtime.control.controlnet import ControlNetWeights

        models_dir = self.settings.path("models")
        dtype = self.settings.gpu.dtype
        base = f"controlnet:{Path(ref).name or ref}"
        return await self.r._register(
            base,
            {"controlnet": ref, "family": family},
            lambda name: ControlNetWeights(ref, family, models_dir, name, dtype),
        )

    async def preprocessor(self, kind: str) -> Any:
        """The registered Preprocessor for a control type."""
        from engine.runtime.control.preprocess import Preprocessor

        kind = control_type(kind)
        models_dir = self.settings.path("models")
        annotators = self.settings.control.annotators
        return await self.r._register(
            f"preprocess:{kind}",
            {"preprocessor": kind, "annotators": annotators},
            lambda name: Preprocessor(kind, models_dir, annotators, name=name),
        )
