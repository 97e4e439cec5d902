"""The plan of a turn: the first route (taken by the rules when one is clearly ahead) and what follows a call.

Steps after the first are rules too, each a user would expect: a search for "like my robot but in ink" goes on
to a generation from the found image; "improve this prompt and draw it" generates the improved prompt;
"... and check it" critiques the result and refines it once. Anything else ends the turn after one tool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.understand import Facts
from tools.orchestrator import ToolCall
from tools.prompt_rules import Decide

EDIT_STRENGTH = 0.6  # img2img strength for "make it darker" on the user's image: keeps the composition
EDIT_SIGNAL = "generate: changes the attached or replied image"
_REDRAW = re.compile(r"\b(variations?|re-?roll|upscale|again|retry|redo|regenerate|remake|another|vary|more like)\b")
ORDER = ("generate", "search_history", "critique", "describe", "enhance_prompt", "apply_style", "reply")
FILLS: dict[str, tuple[str, ...]] = {  # the free-text arguments the model writes for each tool
    "generate": ("prompt",),
    "search_history": ("query",),
    "enhance_prompt": ("prompt",),
    "apply_style": ("prompt", "style"),
    "critique": ("focus",),
}
_EN = frozenset(["a", "an", "the", "of", "in", "on", "at", "with", "and", "under", "over", "by", "for", "from", "to", "is", "are", "into", "near", "at"])
_FOREIGN = frozenset(
    ["un", "une", "le", "la", "les", "des", "du", "dans", "sur", "sous", "avec", "qui", "el", "los", "las", "una", "del", "en", "con", "por", "der", "die", "das", "ein", "eine", "im", "mit", "und", "unter", "il", "lo", "gli", "uno", "di", "della", "nel", "sul", "um", "uma", "os", "nas", "no", "na", "com"]
)


@dataclass(frozen=True)
class Prior:
    """The rules' view of the first step: a route they take alone, or the candidates the model chooses from."""

    route: str | None
    candidates: tuple[str, ...]
    why: str


def prior(facts: Facts, offered: Sequence[str], decide: Decide) -> Prior:
    """Take the clearly leading route; otherwise list the plausible ones (generate and reply always)."""
    ranked = [(r, s) for r, s in facts.ranked() if r in offered]
    scores = dict(ranked)
    if "explain" in scores and scores["explain"] >= decide.min_score:
        return Prior("explain", ("explain",), "asks why")
    search = scores.get("search_history", 0.0)
    if search >= decide.min_score and facts.past and facts.asks_to_draw and "search_history" in offered:
        return Prior("search_history", ("search_history",), "points at an earlier image to build on")
    if ranked:
        (best, score), second = ranked[0], (ranked[1][1] if len(ranked) > 1 else 0.0)
        if score >= decide.min_score and score - second >= decide.min_margin:
            return Prior(best, (best,), f"{best} {score:g} vs {second:g}")
    picked = [r for r, s in ranked if s >= decide.candidate_score and r in ORDER]
    for must in ("generate", "reply"):
        if must not in picked and must in offered:
            picked.append(must)
    why = ", ".join(f"{r} {s:g}" for r, s in ranked) or "no rule fired"
    return Prior(None, tuple(picked), f"unsure ({why})")


def edits_image(facts: Facts) -> bool:
    """True when the request changes the attached or replied image ("make it darker", "same but at night")."""
    return facts.has_image and facts.intent is None and EDIT_SIGNAL in facts.fired


def instruction_edit(facts: Facts) -> bool:
    """True for an edit an instruction model can follow ("make it night"), not a redraw ("again", "2 more")."""
    return edits_image(facts) and bool(content_words(facts.change)) and not _REDRAW.search(facts.text.lower())


def prefill(tool: str, facts: Facts, params: Sequence[str], replied_generation_id: int | None) -> dict[str, Any]:
    """The arguments read from the user's words and the turn's context (the model is not asked for them)."""
    args = {k: v for k, v in facts.args.items() if k in params}
    if tool == "generate" and facts.has_image:
        if facts.intent is not None:
            args |= {k: v for k, v in facts.intent.tool_defaults().items() if k in params}
        elif edits_image(facts):
            if replied_generation_id is not None and "source_generation_id" in params:
                args["source_generation_id"] = replied_generation_id
            if "strength" in params:
                args["strength"] = EDIT_STRENGTH
            if "edit" in params and instruction_edit(facts):  # without an edit model the tool does img2img
                args["edit"] = True
    if tool in ("critique", "describe"):
        args = {}
    return args


def looks_foreign(text: str) -> bool:
    """True when a draft reads as another language than English (translating it is then welcome)."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    return sum(w in _FOREIGN for w in words) > sum(w in _EN for w in words)


def content_words(text: str) -> set[str]:
    """Lower-case words of 3+ letters."""
    return {w for w in re.findall(r"[^\W\d_]{3,}", text.lower())}


KEEP_SHARE = 0.75  # a rewritten prompt or query must keep this share of the user's words


def faithful(draft: str, answer: str, must: str = "") -> bool:
    """True when the model's text keeps most of the draft's words and all of `must` (or translates a draft)."""
    if not answer.strip():
        return False
    if must and not looks_foreign(must) and content_words(must) - content_words(answer):
        return False
    before = content_words(draft)
    if not before or looks_foreign(draft):
        return True
    return len(before & content_words(answer)) >= KEEP_SHARE * len(before)


def follow(
    facts: Facts, call: ToolCall, calls: Sequence[ToolCall], decide: Decide, check: bool
) -> tuple[str, dict[str, Any], dict[str, str]] | None:
    """(tool, prefilled args, drafts) of the step after `call`, or None to end the turn."""
    if not call.ok:
        return None
    draw = facts.asks_to_draw
    made = [c for c in calls if c.ok and c.name == "generate"]
    if call.name == "search_history" and draw and call.result.get("results") and not made:
        found = call.result["results"][0]
        draft = f"{found['prompt']}, {facts.twist}" if facts.twist else str(found["prompt"])
        return "generate", {"source_generation_id": found["id"]}, {"prompt": draft}
    if call.name == "enhance_prompt" and draw and not made:
        return "generate", {"prompt": call.result["prompt"]}, {}
    if call.name == "generate" and check and len(made) == 1:
        return "critique", {"job_id": call.result["job_ids"][0]}, {}
    if call.name == "critique" and check and len(made) == 1 and call.result.get("matches_prompt") is False:
        return refine(made[0], call.result.get("fixes") or {})
    return None


def refine(made: ToolCall, fixes: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]] | None:
    """One refinement of a checked image from the critique's fixes (same seed); None when there are none."""
    prompt = str(made.args.get("prompt", ""))
    for term in fixes.get("prompt_remove") or []:
        prompt = re.sub(rf"\s*,?\s*\b{re.escape(term)}\b", "", prompt, flags=re.IGNORECASE)
    added = [t for t in fixes.get("prompt_add") or [] if t.lower() not in prompt.lower()]
    negative = ", ".join(x for x in [str(made.args.get("negative") or ""), *(fixes.get("negative_add") or [])] if x)
    if not added and negative == (made.args.get("negative") or "") and prompt == made.args.get("prompt"):
        return None
    args = {
        "prompt": ", ".join([prompt.strip(" ,"), *added]),
        "negative": negative,
        "seed": made.result.get("seed"),
    }
    for key in ("count", "aspect", "style", "preset"):
        if made.args.get(key) not in (None, 1):
            args[key] = made.args[key]
    return "generate", args, {}
