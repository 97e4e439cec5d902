"""Tag normalization: lowercase, trimmed, singular, aliases from prompts/tags.toml, de-duplicated."""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.store.seed import DataFileError

TAGS_FILE = Path(__file__).resolve().parent.parent.parent / "prompts" / "tags.toml"
MAX_TAG_CHARS = 32
_JUNK = re.compile(r"[^a-z0-9&' -]+")
_SPACES = re.compile(r"\s+")


Word = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS, pattern=r"^[a-z0-9][a-z0-9&' -]*$")]


class _Plural(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    words: tuple[Word, ...] = ()


class TagsFile(BaseModel):
    """prompts/tags.toml: aliases (word → canonical tag) and plural-looking words kept as they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    aliases: dict[Word, Word] = {}
    plural: _Plural = _Plural()


def load_tags_file(path: Path = TAGS_FILE) -> TagsFile:
    """The validated tags file; DataFileError naming the file and the key."""
    try:
        return TagsFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as e:
        raise DataFileError(f"{path.name}: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DataFileError(f"{path.name}: key '{where}': {first['msg']}") from None


@functools.cache
def _table(path: Path = TAGS_FILE) -> tuple[dict[str, str], frozenset[str]]:
    data = load_tags_file(path)
    return dict(data.aliases), frozenset(data.plural.words)


def singular(word: str, keep: frozenset[str] = frozenset()) -> str:
    """English singular of one word by suffix rules (words in `keep`, and short ones, stay as they are)."""
    if word in keep or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ves") and word[:-3] in ("lea", "wol", "shel", "hal", "cal", "el", "thie", "loa"):
        return word[:-3] + "f"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "os")):
        return word[:-1]
    return word


def normalize(tag: str) -> str:
    """One tag in canonical form ('' when nothing usable is left)."""
    aliases, keep = _table()
    text = _SPACES.sub(" ", _JUNK.sub(" ", tag.lower())).strip(" '-")
    if not text or text in aliases:
        return aliases.get(text, "")[:MAX_TAG_CHARS]
    if text in keep:
        return text[:MAX_TAG_CHARS]
    words = text.split(" ")
    words[-1] = singular(words[-1], keep)  # "red apples" -> "red apple"
    text = " ".join(words)
    return aliases.get(text, text)[:MAX_TAG_CHARS].strip()


def normalize_all(tags: list[str], limit: int = 12) -> list[str]:
    """Canonical, de-duplicated tags in first-seen order, at most `limit`."""
    out: list[str] = []
    for t in tags:
        n = normalize(t)
        if n and n not in out:
            out.append(n)
    return out[:limit]
