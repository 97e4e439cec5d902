"""LoRA adapters on a loaded pipeline: load by path/hub id with adapter names, weight them, unload exactly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.resolve import resolve_model

log = logging.getLogger("atelier.engine")
LORA_PATTERNS = ["*.safetensors", "*.json"]


class LoraManager:
    """Tracks which adapters are in the pipeline; reloads only when the requested set changes."""

    def __init__(self, who: str, models_dir: Path | None = None) -> None:
        self.who = who
        self.models_dir = models_dir
        self.loaded: dict[str, str] = {}  # resolved file path -> adapter name
        self.hotswap = False  # set by the pipeline when gpu.lora_hotswap is on (fastpaths.apply)
        self.slots: list[str] = []  # hot-swap: adapter names in the pipeline, active or at weight 0

    def _resolve(self, ref: str) -> Path:
        path = resolve_model(ref, f"{self.who} LoRA '{ref}'", self.models_dir, patterns=LORA_PATTERNS)
        if path.is_dir():
            files = sorted(path.glob("*.safetensors"))
            if not files:
                raise InvalidRequest(f"LoRA '{ref}': no .safetensors file in {path}")
            path = files[0]
        return path

    def apply(self, pipe: Any, loras: list[tuple[str, float]]) -> None:
        """Make exactly `loras` active with their scales (an empty list removes every adapter)."""
        wanted = [(self._resolve(ref), scale, ref) for ref, scale in loras]
        keys = [str(p) for p, _, _ in wanted]
        if len(set(keys)) != len(keys):
            raise InvalidRequest("the same LoRA is listed more than once")
        if set(keys) != set(self.loaded) and self.hotswap:
            self._swap(pipe, wanted)
        elif set(keys) != set(self.loaded):
            self.clear(pipe)
            for i, (path, _, ref) in enumerate(wanted):
                name = f"lora{i}"
                try:
                    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
                except (ValueError, KeyError, RuntimeError, OSError) as e:
                    self.clear(pipe)
                    raise InvalidRequest(f"LoRA '{ref}' cannot be applied to {self.who}: {e}") from e
                self.loaded[str(path)] = name
                log.info("loaded LoRA %s as %s on %s", path, name, self.who)
        if wanted or self.slots:
            names = [self.loaded[k] for k in keys]
            idle = [n for n in self.slots if n not in names]  # hot-swap slots not used now: weight 0
            weights = [s for _, s, _ in wanted] + [0.0] * len(idle)
            pipe.set_adapters(names + idle, adapter_weights=weights)

    def _swap(self, pipe: Any, wanted: list[tuple[Path, float, str]]) -> None:
        """Hot-swap: slot i takes wanted[i] in place (a new slot is loaded once), so nothing recompiles."""
        self.loaded = {}
        for i, (path, _, ref) in enumerate(wanted):
            name, hot = f"lora{i}", f"lora{i}" in self.slots
            try:
                pipe.load_lora_weights(
                    str(path.parent), weight_name=path.name, adapter_name=name, hotswap=hot
                )
            except (ValueError, KeyError, RuntimeError, OSError) as e:
                self.clear(pipe)
                raise InvalidRequest(f"LoRA '{ref}' cannot be hot-swapped into {self.who}: {e}") from e
            if not hot:
                self.slots.append(name)
            self.loaded[str(path)] = name
            log.info("%s LoRA %s as %s on %s", "hot-swapped" if hot else "loaded", path, name, self.who)

    def clear(self, pipe: Any) -> None:
        """Remove every adapter layer so the pipeline computes exactly the base model again."""
        if (self.loaded or self.slots) and pipe is not None:
            pipe.unload_lora_weights()
            log.info("unloaded LoRAs %s from %s", ", ".join(self.loaded.values()), self.who)
        self.loaded = {}
        self.slots = []
