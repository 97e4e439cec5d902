"""The diffusion engine: requests, the arbiter-managed DiffusionModel, safety, PNG metadata, tiny test models.

Heavy imports (torch, diffusers) happen inside functions, so importing this package is cheap.
"""

from engine.runtime.diffusion.errors import (
    BlankImage,
    Cancelled,
    DiffusionError,
    GenerationFailed,
    ImageWithheld,
    InvalidRequest,
    ModelNotAvailable,
    SafetyBlocked,
)
from engine.runtime.diffusion.pipeline import DiffusionModel
from engine.runtime.diffusion.png import png_bytes, read_png_meta, save_png
from engine.runtime.diffusion.request import (
    ASPECTS,
    BASE_SIDE,
    GenerationRequest,
    aspect_size,
    build_request,
    check_limits,
)
from engine.runtime.diffusion.safety import ClipSafetyChecker, SafetyChecker, is_spoiler
from engine.runtime.diffusion.schedulers import SCHEDULERS
from engine.runtime.diffusion.upscale import UpscalerModel

__all__ = [
    "ASPECTS",
    "BASE_SIDE",
    "SCHEDULERS",
    "BlankImage",
    "Cancelled",
    "ClipSafetyChecker",
    "DiffusionError",
    "DiffusionModel",
    "GenerationFailed",
    "GenerationRequest",
    "ImageWithheld",
    "InvalidRequest",
    "ModelNotAvailable",
    "SafetyBlocked",
    "SafetyChecker",
    "UpscalerModel",
    "aspect_size",
    "build_request",
    "check_limits",
    "is_spoiler",
    "png_bytes",
    "read_png_meta",
    "save_png",
]
