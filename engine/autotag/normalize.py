"""Tag normalization: lowercase, trimmed, singular, aliases from prompts/tags.toml, de-duplicated."""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

TAGS_FILE = Path(__file__).resolve().parent.parent.parent / "prompts" / "tags.toml"
MAX_TAG_CHARS = 32
_JUNK = re.compile(r"[^a-z0-9&' -]+")
_SPACES = re.compile(r"\s+")


@functools.cache
def _table(path: Path = TAGS_FILE) -> tuple[dict[str, str], frozenset[str]]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    aliases = {str(k).lower(): str(v).lower() for k, v in data.get("aliases", {}).items()}
    keep = frozenset(str(w).lower() for w in data.get("plural", {}).get("words", []))
    return aliases, keep


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
