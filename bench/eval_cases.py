"""The agent evaluation's case file (bench/agent_cases.jsonl, versioned data) and how a call's arguments score.

One JSON object per line:
  {"id": "gen-001", "text": "...", "tool": "generate", "args": {...},
   "image": "attached" | "replied" (optional), "history": [{"role": "user"|"assistant", "content": "..."}],
   "lang": "fr" (optional), "note": "..." (optional)}
`tool` is the first tool a competent assistant calls (or "reply": no tool). `args` keys:
  prompt_words / query_words / negative_words / focus_words: words that must appear (by word prefix,
  case-insensitive; "cat|chat" lists alternatives); count, aspect, seed, style, preset: exact values;
  control (list), reference, outpaint: the image modes; uses_image: the call must use the user's image;
  edit: true/false when the call must (not) be an instruction edit.
Arguments a case does not list must stay at their defaults (count 1, no seed, no aspect, no style, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CASES_FILE = Path(__file__).with_name("agent_cases.jsonl")
Tool = Literal["generate", "apply_style", "search_history", "enhance_prompt", "critique", "describe", "reply"]
Words = list[Annotated[str, Field(min_length=1, max_length=80)]]
EXACT = ("count", "aspect", "seed", "style", "preset", "reference", "outpaint")
DEFAULTS: dict[str, Any] = {"count": 1}
IMAGE_ARGS = ("strength", "source_generation_id", "control", "reference", "outpaint", "edit")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expected(Strict):
    prompt_words: Words = []
    query_words: Words = []
    negative_words: Words = []
    focus_words: Words = []
    count: Annotated[int, Field(ge=1, le=10)] | None = None
    aspect: str | None = None
    seed: int | None = None
    style: str | None = None
    preset: str | None = None
    control: list[str] | None = None
    reference: Literal["style", "subject"] | None = None
    outpaint: Literal["all", "left", "right", "up", "down"] | None = None
    uses_image: bool = False
    edit: bool | None = None  # checked only when given: the call is (or is not) an instruction edit


class Line(Strict):
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=2000)]


class Case(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z]+-\d{3}$")]
    text: Annotated[str, Field(min_length=1, max_length=2000)]
    tool: Tool
    args: Expected = Expected()
    image: Literal["attached", "replied"] | None = None
    history: list[Line] = []
    lang: str | None = None
    note: str | None = None


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    """Every case of a .jsonl file; ValueError naming the line for a bad one or a repeated id."""
    cases: list[Case] = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            cases.append(Case.model_validate(json.loads(raw)))
        except (ValueError, ValidationError) as e:
            raise ValueError(f"{path.name}:{n}: {e}") from None
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{path.name}: repeated ids {dupes}")
    return cases


def _tokens(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def has_word(text: str, word: str) -> bool:
    """True when one of the '|' alternatives starts a word of `text` (or, with spaces or hyphens, appears)."""
    low, toks = text.lower(), _tokens(text)
    for alt in (a.strip().lower() for a in word.split("|")):
        if not alt:
            continue
        if re.search(r"[\s-]", alt) or re.search(r"[\u3000-\u9fff\uac00-\ud7af]", alt):  # phrases, CJK
            if alt in low or alt.replace("-", " ") in low.replace("-", " "):
                return True
        elif any(t.startswith(alt) for t in toks):
            return True
    return False


def _missing(text: Any, words: list[str], what: str) -> list[str]:
    text = str(text or "")
    return [f"{what} lacks {w!r}" for w in words if not has_word(text, w)]


def score_args(case: Case, args: Mapping[str, Any], replied_id: int | None) -> list[str]:
    """What is wrong with the first call's arguments (empty = right)."""
    e = case.args
    problems = _missing(args.get("prompt"), e.prompt_words, "prompt")
    problems += _missing(args.get("query"), e.query_words, "query")
    problems += _missing(args.get("negative"), e.negative_words, "negative")
    problems += _missing(args.get("focus"), e.focus_words, "focus")
    for key in EXACT:
        if key not in args and getattr(e, key) is None:
            continue
        want = getattr(e, key)
        want = DEFAULTS.get(key) if want is None else want
        if args.get(key) != want:
            problems.append(f"{key} {args.get(key)!r} != {want!r}")
    if (e.control is not None or args.get("control")) and sorted(args.get("control") or []) != sorted(
        e.control or []
    ):
        problems.append(f"control {args.get('control')!r} != {e.control!r}")
    if e.edit is not None and bool(args.get("edit")) != e.edit:
        problems.append(f"edit {bool(args.get('edit'))!r} != {e.edit!r}")
    if case.tool == "generate":
        used = any(args.get(k) not in (None, False) for k in IMAGE_ARGS)
        if e.uses_image and not used:
            problems.append("does not use the user's image")
        if not e.uses_image and e.control is None and e.reference is None and e.outpaint is None and used:
            problems.append("uses an image it was not asked to")
        src = args.get("source_generation_id")
        if e.uses_image and case.image == "replied" and src not in (None, replied_id):
            problems.append(f"source_generation_id {src} is not the replied image {replied_id}")
    return problems
