"""Which image + LLM preset pair fits this machine, from the presets' `vram_mb` (the doctor's advice)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.runtime.diffusion.edit import EDIT_FAMILIES
from engine.runtime.diffusion.video import VIDEO_FAMILIES

TEST_PREFIXES = ("demo:", "pkg:", "chunks:")  # offline test and evaluation models: never advised
SIDE_FAMILIES = (*EDIT_FAMILIES, *VIDEO_FAMILIES)  # edit and video presets sit beside the default, never are it


@dataclass(frozen=True)
class Sized:
    """A preset that says how much GPU memory it needs."""

    name: str
    vram_mb: int


@dataclass(frozen=True)
class Advice:
    """The recommended pair and why; `fits` is pair | each | none | cpu."""

    image: str | None
    llm: str | None
    fits: str
    budget_mb: int | None
    message: str

    def to_json(self) -> dict:
        """The JSON form."""
        return {k: getattr(self, k) for k in ("image", "llm", "fits", "budget_mb", "message")}


def candidates(presets: list[dict], *, llm: bool) -> list[Sized]:
    """Presets with a vram_mb > 0 that are real models (LLMs: ones that can be the agent)."""
    out = []
    for p in presets:
        if not p.get("vram_mb") or str(p.get("model", "")).startswith(TEST_PREFIXES):
            continue
        if llm and p.get("role", "agent") == "vision":
            continue
        if not llm and p.get("family") in SIDE_FAMILIES:
            continue
        out.append(Sized(p["name"], int(p["vram_mb"])))
    return sorted(out, key=lambda s: (-s.vram_mb, s.name))


def _setting(image: str, llm: str) -> str:
    return f'generation.default_preset = "{image}", llm.preset = "{llm}"'


def _cpu(images: list[Sized], llms: list[Sized]) -> Advice:
    if not images or not llms:
        return Advice(None, None, "cpu", None, "no GPU: use `atelier chat --demo` (offline test models)")
    image, llm = images[-1], llms[-1]
    message = (
        "no GPU: try `atelier chat --demo` (offline test models), or the small pair"
        f" {_setting(image.name, llm.name)}"
        " - on the CPU it will be slow (minutes per image)"
    )
    return Advice(image.name, llm.name, "cpu", None, message)


def _alone(images: list[Sized], llms: list[Sized], budget_mb: int, current: tuple[str, str]) -> Advice:
    image = next((x for x in images if x.vram_mb <= budget_mb), None)
    llm = next((x for x in llms if x.vram_mb <= budget_mb), None)
    if image is None or llm is None:
        what = "image" if image is None else "LLM"
        msg = f"no {what} preset fits {budget_mb} MB of VRAM: use `--demo`, or lower gpu.reserve_mb"
        return Advice(image.name if image else None, llm.name if llm else None, "none", budget_mb, msg)
    how = f"no pair fits {budget_mb} MB together, so the arbiter swaps them (slower turns)"
    return _advice(image, llm, "each", budget_mb, how, current)


def _advice(
    image: Sized, llm: Sized, fits: str, budget_mb: int, how: str, current: tuple[str, str]
) -> Advice:
    same = " - already configured" if (image.name, llm.name) == current else ""
    return Advice(image.name, llm.name, fits, budget_mb, f"{_setting(image.name, llm.name)}: {how}{same}")


def recommend(
    device: str, budget_mb: int | None, images: list[Sized], llms: list[Sized], current: tuple[str, str]
) -> Advice:
    """The largest pair fitting the budget together, else the largest of each alone; on CPU the small pair."""
    if device == "cpu" or budget_mb is None:
        return _cpu(images, llms)
    pairs = [(i, m) for i in images for m in llms if i.vram_mb + m.vram_mb <= budget_mb]
    if not pairs:
        return _alone(images, llms, budget_mb, current)
    image, llm = max(pairs, key=lambda p: (p[0].vram_mb + p[1].vram_mb, p[0].vram_mb))
    how = f"both stay loaded ({image.vram_mb + llm.vram_mb} of {budget_mb} MB)"
    return _advice(image, llm, "pair", budget_mb, how, current)
