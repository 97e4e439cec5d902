"""Settings section of guided generation: ControlNets, reference images and outpainting (kept out of config.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.config_base import Section


class IpAdapter(Section):
    """Where one model family's IP-Adapter (reference image) weights live."""

    model: str = Field(description="hub id or local folder")
    subfolder: str = Field("", description="folder inside `model` that holds `weight`; empty = its root")
    weight: str = Field(description="weight file name inside `subfolder`")
    image_encoder: str = Field(
        description='image encoder folder inside `model` (a name without "/" is taken inside `subfolder`)'
    )


_SD15_NETS = {
    t: f"lllyasviel/control_v11p_sd15_{t}" for t in ("canny", "openpose", "lineart", "softedge", "scribble")
} | {"depth": "lllyasviel/control_v11f1p_sd15_depth"}


class Control(Section):
    """Guided generation: ControlNets, reference images (IP-Adapter) and outpainting."""

    annotators: str = Field(
        "lllyasviel/Annotators", description="hub repo or folder with the control preprocessors' weights"
    )
    detect_resolution: Annotated[int, Field(ge=64, le=2048)] = Field(
        512, description="resolution the preprocessors analyse a control image at, in pixels"
    )
    max_controls: Annotated[int, Field(ge=1, le=3)] = Field(3, description="most control images per request")
    reference_scale: Annotated[float, Field(ge=0, le=1.5)] = Field(
        0.6, description="default strength of a reference image; 0 = ignored"
    )
    outpaint_overlap_px: Annotated[int, Field(ge=0, le=128)] = Field(
        16, description="pixels of the original repainted and feathered along an outpaint seam; 0 = hard edge"
    )
    controlnets: dict[Literal["sd15", "sdxl", "flux"], dict[str, str]] = Field(
        {
            "sd15": _SD15_NETS,
            "sdxl": {
                "canny": "diffusers/controlnet-canny-sdxl-1.0",
                "depth": "diffusers/controlnet-depth-sdxl-1.0",
                "openpose": "thibaud/controlnet-openpose-sdxl-1.0",
                "scribble": "xinsir/controlnet-scribble-sdxl-1.0",
            },
            "flux": {"canny": "InstantX/FLUX.1-dev-Controlnet-Canny"},
        },
        description="family → control type → ControlNet weights (hub id or path); a missing entry is an error",
    )
    ip_adapter: dict[Literal["sd15", "sdxl"], IpAdapter] = Field(
        {
            "sd15": IpAdapter(
                model="h94/IP-Adapter",
                subfolder="models",
                weight="ip-adapter_sd15.safetensors",
                image_encoder="models/image_encoder",
            ),
            "sdxl": IpAdapter(
                model="h94/IP-Adapter",
                subfolder="sdxl_models",
                weight="ip-adapter_sdxl.safetensors",
                image_encoder="sdxl_models/image_encoder",
            ),
        },
        description="family → the IP-Adapter files reference images use",
    )
