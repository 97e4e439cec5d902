"""`atelier check determinism PRESET`: render one request twice (bypassing the cache) and compare checksums."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from engine.config import Settings
from engine.presets import ImagePreset
from engine.runtime.arbiter import Arbiter
from engine.runtime.diffusion.request import build_request
from engine.runtime.models import ModelRegistry
from engine.store import Store


@dataclass(frozen=True)
class DeterminismReport:
    """The checksums of each image of the two renders."""

    preset: str
    device: str
    first: list[str]
    second: list[str]

    @property
    def same(self) -> bool:
        """True when both renders gave identical pixels."""
        return self.first == self.second

    def text(self) -> str:
        """One line per image, then the verdict."""
        lines = [f"preset {self.preset} on {self.device}:"]
        lines += [
            f"  image {i + 1}: {a[:16]} {'==' if a == b else '!='} {b[:16]}"
            for i, (a, b) in enumerate(zip(self.first, self.second, strict=True))
        ]
        verdict = "deterministic" if self.same else "NOT deterministic: the same request gave different pixels"
        return "\n".join([*lines, verdict])


def checksum(image: object) -> str:
    """sha256 of an image's mode, size and pixels."""
    h = hashlib.sha256(f"{image.mode}:{image.size}".encode())  # type: ignore[attr-defined]
    h.update(image.tobytes())  # type: ignore[attr-defined]
    return h.hexdigest()


async def check_determinism(
    store: Store, models: ModelRegistry, arbiter: Arbiter, settings: Settings, preset_name: str, *,
    prompt: str = "a lighthouse on a cliff", seed: int = 1234, steps: int | None = None, batch: int = 1,
) -> DeterminismReport:  # fmt: skip
    """Render the same request twice with the preset's model; UnknownEntry/InvalidRequest for bad input."""
    data = await store.presets.resolve("image", preset_name)
    preset = ImagePreset.model_validate({k: v for k, v in data.items() if k != "scope"}).model_dump()
    runtime = await models.image_preset(preset)
    model = await models.image_model(runtime)
    fields: dict[str, object] = {"prompt": prompt, "negative": "", "seed": seed, "batch": batch, "safety": "off"}
    if steps is not None:
        fields["steps"] = steps
    req = build_request(preset, settings.generation, **fields)
    async with arbiter.use(model.name):
        first = await asyncio.to_thread(model.generate, req)
        second = await asyncio.to_thread(model.generate, req)
    return DeterminismReport(preset["name"], arbiter.device, [checksum(i) for i in first], [checksum(i) for i in second])
