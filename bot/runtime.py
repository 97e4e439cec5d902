"""The start-up check every front runs: are the configured models here? If not, which `atelier models pull`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.runtime.managed import ModelNotAvailable

if TYPE_CHECKING:
    from engine.core import Engine
    from engine.runtime.model_files import PresetFiles, Source

log = logging.getLogger(__name__)


def _not_ready(src: Source) -> str:
    name = f"{src.role} {src.filename} from {src.ref}" if src.filename else f"{src.role} {src.ref}"
    return f"{name} is not downloaded" if src.kind in ("hub-file", "hub-repo") else f"{name}: {src.note}"


def _missing(pf: PresetFiles) -> str:
    """What is missing of one preset, e.g. "image preset 'sdxl': model ... is not downloaded"."""
    kind = "LLM" if pf.kind == "llm" else pf.kind
    return f"{kind} preset '{pf.name}': " + ", ".join(_not_ready(src) for src in pf.sources if not src.ready)


def _commands(fixes: list[str]) -> str:
    return " and ".join(f"`{f}`" if f.startswith(("atelier ", "pip ")) else f for f in fixes)


async def check_models(engine: Engine) -> None:
    """Raise ModelNotAvailable naming the `atelier models pull NAME` to run for each missing model."""
    import asyncio

    from engine.runtime.model_files import preset_files

    s = engine
    wanted = [("image", s.default_image_preset), ("llm", s.default_llm_preset)]
    if s.default_vision_preset:
        wanted.append(("llm", s.default_vision_preset))
    problems: list[str] = []
    fixes: list[str] = []
    for kind, name in wanted:
        data = await s.store.presets.resolve(kind, name)
        pf = await asyncio.to_thread(preset_files, kind, data, s.settings)
        if not pf.ready:
            problems.append(_missing(pf))
            fixes += [f for f in pf.fixes if f not in fixes]
    if problems:
        raise ModelNotAvailable(
            f"{'; '.join(problems)}. Run {_commands(fixes)},"
            " or start with --demo to use the offline test models"
        )
    image = await s.store.presets.resolve("image", s.default_image_preset)
    await s.models.image_preset(image)  # resolves demo:/pkg: references now (builds the demo models once)
