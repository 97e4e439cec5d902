"""Load the shipped data files in prompts/ (validated) and seed them into the store idempotently."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.config import Settings
from engine.presets import ImagePreset, LlmPreset
from engine.store.db import Database
from engine.store.library import Library, Presets

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
LIBRARY_FILES = {"styles.toml": "style", "negatives.toml": "negative", "lighting.toml": "lighting"}


class DataFileError(ValueError):
    """A shipped or user data file that does not validate; the message names the file and entry."""


class LibraryFileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
    content: Annotated[str, Field(min_length=3, max_length=1000)]
    negative: Annotated[str, Field(max_length=1000)] = ""
    description: Annotated[str, Field(max_length=200)] = ""


def _name(path: Path | str) -> str:
    return path.name if isinstance(path, Path) else path


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise DataFileError(f"{path.name}: {e}") from None


def _validate(path: Path | str, key: str, model: type[BaseModel], items: list) -> list:
    out, seen = [], set()
    for i, item in enumerate(items):
        try:
            obj = model.model_validate(item)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise DataFileError(f"{_name(path)}: [[{key}]] #{i + 1} field '{where}': {first['msg']}") from None
        name = getattr(obj, "label", None) or obj.name
        if name in seen:
            raise DataFileError(f"{_name(path)}: duplicate {key} '{name}'")
        seen.add(name)
        out.append(obj)
    return out


def load_library_file(path: Path) -> list[LibraryFileEntry]:
    """Validate one library file ([[entry]] tables)."""
    data = _read_toml(path)
    if set(data) - {"entry"}:
        raise DataFileError(f"{path.name}: unknown top-level keys {sorted(set(data) - {'entry'})}")
    return _validate(path, "entry", LibraryFileEntry, data.get("entry", []))


def load_presets_file(path: Path) -> tuple[list[ImagePreset], list[LlmPreset]]:
    """Validate a presets file ([[image]] and [[llm]] tables)."""
    data = _read_toml(path)
    if set(data) - {"image", "llm"}:
        raise DataFileError(f"{path.name}: unknown top-level keys {sorted(set(data) - {'image', 'llm'})}")
    return (
        _validate(path, "image", ImagePreset, data.get("image", [])),
        _validate(path, "llm", LlmPreset, data.get("llm", [])),
    )


def load_shipped(prompts_dir: Path = PROMPTS_DIR) -> dict[str, list]:
    """Every shipped data file, validated: {'style': [...], 'negative': [...], ..., 'image': [...], 'llm': [...]}."""
    out: dict[str, list] = {}
    for name, category in LIBRARY_FILES.items():
        out[category] = load_library_file(prompts_dir / "library" / name)
    out["image"], out["llm"] = load_presets_file(prompts_dir / "presets.toml")
    return out


UserPresetList = tuple[list[ImagePreset], list[LlmPreset]]


def load_user_presets(settings: Settings) -> UserPresetList:
    """The user's own presets: the presets file next to the config, then the config's presets.image/llm.

    Validated like the shipped ones; errors name the file (or 'config presets.image') and the field.
    """
    image: list[ImagePreset] = []
    llm: list[LlmPreset] = []
    path = settings.user_presets_file()
    if path.is_file():
        image, llm = (list(x) for x in load_presets_file(path))
    image += _validate("config presets.image", "image", ImagePreset, list(settings.presets.image))
    llm += _validate("config presets.llm", "llm", LlmPreset, list(settings.presets.llm))
    return image, llm


async def seed(db: Database, prompts_dir: Path = PROMPTS_DIR, user: UserPresetList | None = None) -> dict[str, int]:
    """Upsert shipped entries (global scope, shipped=1), then the user's presets over them; safe at every start."""
    shipped = load_shipped(prompts_dir)
    lib, presets = Library(db), Presets(db)
    counts: dict[str, int] = {}
    for category in LIBRARY_FILES.values():
        for e in shipped[category]:
            await lib.add(
                e.label, category, e.content, negative=e.negative, description=e.description, shipped=True
            )
        counts[category] = len(shipped[category])
    for kind in ("image", "llm"):
        for p in shipped[kind]:
            await presets.save(kind, p.name, p.model_dump(mode="json", exclude={"name"}), shipped=True)
        counts[kind] = len(shipped[kind])
    for kind, items in zip(("image", "llm"), user or ([], []), strict=True):
        for p in items:  # a user preset with a shipped name replaces it
            await presets.save(kind, p.name, p.model_dump(mode="json", exclude={"name"}), shipped=False)
        counts[f"user_{kind}"] = len(items)
        keep = [p.name for p in items]  # global non-shipped rows come only from the user's files: drop stale ones
        marks = ",".join("?" * len(keep))
        await db.execute(
            "DELETE FROM presets WHERE kind = ? AND user_id = 0 AND guild_id = 0 AND shipped = 0"
            + (f" AND name NOT IN ({marks})" if keep else ""),
            (kind, *keep),
        )
    return counts
