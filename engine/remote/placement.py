"""Where a worker runs: its device (`--device cuda:N`, `cpu:N` for tests), the visible GPUs, warm presets."""

from __future__ import annotations

import re
from typing import Any

from engine.config import Settings

DEVICE = re.compile(r"^(auto|mps|cpu|cuda)(?::(\d+))?$")


def cuda_count() -> int:
    """How many CUDA devices this process sees (0 without torch's CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_devices() -> list[str]:
    """One device name per visible GPU: ["cuda:0", "cuda:1", ...]."""
    return [f"cuda:{i}" for i in range(cuda_count())]


def parse_device(name: str) -> tuple[str, str]:
    """(the arbiter's device, the gpu.device kind) for a worker's --device; ValueError when unusable.

    `cuda:N` pins the worker to one GPU; `cpu:N` names a CPU "device" (several workers on one machine,
    as the tests run them) and runs on the cpu.
    """
    m = DEVICE.match(name.strip().lower())
    if m is None or (m.group(2) is not None and m.group(1) in ("auto", "mps")):
        raise ValueError(f"--device wants auto, cpu, cpu:N, cuda, cuda:N or mps; got {name!r}")
    kind, index = m.group(1), m.group(2)
    if kind != "cuda" or index is None:
        return kind, kind
    seen = cuda_count()
    if int(index) >= seen:
        raise ValueError(f"--device {name}: this machine shows {seen} CUDA device(s)")
    return f"cuda:{int(index)}", "cuda"


def for_device(settings: Settings, kind: str) -> Settings:
    """The settings with gpu.device set to the worker's device kind (dtype and estimates follow it)."""
    return settings.model_copy(update={"gpu": settings.gpu.model_copy(update={"device": kind})})


def pin(device: str) -> None:
    """Make `cuda:N` this process's current CUDA device, so code that says "cuda" lands on it too."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device.split(":", 1)[1]))


def image_presets(settings: Settings) -> dict[str, dict[str, Any]]:
    """Shipped image presets, then the user's over them, as the dicts a render payload carries."""
    from engine.store.seed import PROMPTS_DIR, load_presets_file, load_user_presets

    shipped, _llm = load_presets_file(PROMPTS_DIR / "presets.toml")
    user, _llm = load_user_presets(settings)
    return {p.name: p.model_dump(mode="json") for p in [*shipped, *user]}


async def warm(renderer: Any, arbiter: Any, settings: Settings, names: list[str]) -> list[str]:
    """Load image presets before taking jobs (jobs for them are routed here); their arbiter names."""
    known = image_presets(settings) if names else {}
    loaded = []
    for name in names:
        if name not in known:
            raise ValueError(
                f"--warm {name}: no image preset of that name (known: {', '.join(sorted(known))})"
            )
        model = await renderer.model(known[name])
        async with arbiter.use(model.name):
            loaded.append(model.name)
    return loaded
