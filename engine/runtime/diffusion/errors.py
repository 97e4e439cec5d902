"""Exceptions raised by the diffusion engine; every one carries a human-readable message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.runtime.managed import ModelNotAvailable

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "BlankImage",
    "Cancelled",
    "DiffusionError",
    "GenerationFailed",
    "ImageWithheld",
    "InvalidRequest",
    "ModelNotAvailable",
    "SafetyBlocked",
]


class DiffusionError(RuntimeError):
    """Base class of the engine's generation errors."""


class InvalidRequest(ValueError):
    """A generation request that breaks a rule (size, budget, scheduler, ...); the message says which."""


class Cancelled(DiffusionError):
    """The caller asked to stop; raised at the next step boundary."""


class GenerationFailed(DiffusionError):
    """Generation could not complete (e.g. out of memory after every fallback); the message says why."""


class ImageWithheld(DiffusionError):
    """One or more images were not delivered; `delivered` holds the images that passed, `withheld` their indices."""

    def __init__(self, message: str, delivered: list[Image.Image], withheld: list[int]) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.withheld = withheld


class SafetyBlocked(ImageWithheld):
    """The safety checker flagged an image and the policy is "block"."""


class BlankImage(ImageWithheld):
    """A decoded image is a single flat colour or contains NaN/inf values; it is never delivered."""
