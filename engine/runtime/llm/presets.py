"""LLM preset parsing, model file resolution (local path or hub download) and vision handler lookup by name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.runtime.llm.types import LlmError
from engine.runtime.managed import ModelNotAvailable

log = logging.getLogger(__name__)

# Vision chat handler names -> class names in llama_cpp.llama_chat_format (resolved lazily).
VISION_HANDLERS: dict[str, str | Callable[..., Any]] = {
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "moondream2": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama-3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "obsidian": "ObsidianChatHandler",
    "gemma3": "MTMDChatHandler",
    "gemma4": "Gemma4ChatHandler",
    "mtmd": "MTMDChatHandler",
}
DEFAULT_VISION_HANDLER = "mtmd"


class LlmPreset(BaseModel):
    """One LLM preset. `model`/`mmproj` are paths (relative ones under paths.models), or file names in `repo`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    repo: str | None = None
    mmproj: str | None = None
    chat_format: str | None = None
    n_ctx: Annotated[int, Field(ge=256)] = 4096
    n_batch: Annotated[int, Field(ge=1)] = 512
    n_gpu_layers: int = -1  # layers offloaded on cuda: -1 = all; 0 = none (the LLM then takes no VRAM)
    flash_attn: bool = False  # llama.cpp flash attention (needed for a quantized V cache)
    kv_cache_type: Literal["f16", "q8_0"] = "f16"  # KV-cache precision: q8_0 takes about half of f16
    n_threads: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    image_max_side: Annotated[int, Field(ge=64)] = 768
    description: str = ""

    @model_validator(mode="after")
    def _quantized_kv_needs_flash_attn(self) -> LlmPreset:
        if self.kv_cache_type != "f16" and not self.flash_attn:
            raise ValueError(
                f"kv_cache_type {self.kv_cache_type!r} needs flash_attn = true "
                "(llama.cpp quantizes the V cache only with flash attention)"
            )
        return self

    @property
    def vision(self) -> bool:
        """True when the preset has a vision projector."""
        return self.mmproj is not None

    @property
    def handler_name(self) -> str | None:
        """The vision handler name (None for text-only presets)."""
        return (self.chat_format or DEFAULT_VISION_HANDLER) if self.vision else None


def parse_preset(raw: dict | LlmPreset) -> LlmPreset:
    """Validate a preset dict; errors name the preset and the key."""
    if isinstance(raw, LlmPreset):
        preset = raw
    else:
        try:
            preset = LlmPreset.model_validate(raw)
        except ValidationError as e:
            name = raw.get("name", "?") if isinstance(raw, dict) else "?"
            problems = "; ".join(
                f"{'.'.join(map(str, x['loc'])) or '(root)'}: {x['msg']}" for x in e.errors()
            )
            raise ValueError(f"LLM preset {name!r}: {problems}") from None
    if preset.vision and preset.handler_name not in VISION_HANDLERS:
        known = ", ".join(sorted(VISION_HANDLERS))
        raise ValueError(
            f"LLM preset {preset.name!r}: unknown vision chat_format {preset.chat_format!r}; one of {known}"
        )
    return preset


def register_vision_handler(name: str, factory: Callable[..., Any]) -> None:
    """Add (or replace) a vision handler factory taking (clip_model_path=..., verbose=...)."""
    VISION_HANDLERS[name] = factory


def make_vision_handler(name: str, clip_model_path: Path, verbose: bool = False) -> Any:
    """A FRESH chat handler instance for one load (handlers must never be shared across loads)."""
    entry = VISION_HANDLERS.get(name)
    if entry is None:
        raise LlmError(f"unknown vision chat handler {name!r}")
    if isinstance(entry, str):
        from llama_cpp import llama_chat_format

        entry = getattr(llama_chat_format, entry, None)
        if entry is None:
            raise LlmError(f"this llama-cpp-python has no {VISION_HANDLERS[name]} for chat_format {name!r}")
    return entry(clip_model_path=str(clip_model_path), verbose=verbose)


def _local(preset: LlmPreset, value: str, models_dir: Path | None, what: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() and models_dir is not None:
        path = models_dir / path
    if not path.is_file():
        raise ModelNotAvailable(f"LLM preset {preset.name!r}: {what} file not found: {path}")
    return path


def _hub(preset: LlmPreset, filename: str, models_dir: Path | None, download: bool, what: str) -> Path | int:
    """A cached hub file's path; if not cached, download it (download=True) or return its size in bytes."""
    import huggingface_hub as hf

    assert preset.repo is not None
    cache_dir = str(models_dir) if models_dir else None
    cached = hf.try_to_load_from_cache(preset.repo, filename, cache_dir=cache_dir)
    if isinstance(cached, str):
        return Path(cached)
    try:
        if download:
            log.info("downloading %s %s from %s", what, filename, preset.repo)
            return Path(
                hf.hf_hub_download(preset.repo, filename, cache_dir=cache_dir)
            )  # tqdm progress on stderr
        meta = hf.get_hf_file_metadata(hf.hf_hub_url(preset.repo, filename))
        return int(meta.size or 0)
    except Exception as e:  # network, 404, auth: all mean "not available"
        raise ModelNotAvailable(
            f"LLM preset {preset.name!r}: cannot fetch {filename} from {preset.repo}: {e}"
        ) from None


def resolve_file(
    preset: LlmPreset, value: str, models_dir: Path | None, *, download: bool, what: str
) -> Path | int:
    """Local path (must exist) or hub file (path once cached; its size when download=False and not cached)."""
    if preset.repo:
        return _hub(preset, value, models_dir, download, what)
    return _local(preset, value, models_dir, what)
