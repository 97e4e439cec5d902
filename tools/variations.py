"""Prompt variations: "a cat" → N distinct prompts (sitting, sleeping, ...) from the LLM, or from fixed rules.

The LLM answers in a grammar-bounded schema (exactly N strings, each starting with a letter, of prompt
characters). Every variation must keep the subject (most content words of the original) and be distinct;
unusable ones are replaced by rule-based variations, so the answer always has N usable prompts.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from engine.runtime.llm import LlmError, validated
from tools.context import ToolContext, ToolError
from tools.enhance_prompt import content_words
from tools.registry import grammar_safe

log = logging.getLogger(__name__)
MIN_COUNT, MAX_COUNT, DEFAULT_COUNT = 2, 8, 4
VARIATION_CHARS = 160
VARIATIONS_MAX_TOKENS = 420
PATTERN = f"^[A-Za-z][A-Za-z0-9 ,.'-]{{2,{VARIATION_CHARS - 1}}}$"
# rule-based variations: what the subject does, where, when and how it is framed (cycled in this order)
RULE_VARIATIONS = (
    "sitting", "sleeping", "running", "jumping", "looking up", "curled up", "standing tall", "playing",
    "in the rain", "at sunset", "in a forest", "on a windowsill", "in the snow", "under neon lights",
    "close-up portrait", "wide shot", "from above", "in soft morning light",
)  # fmt: skip
INSTRUCTIONS = (
    "You write image prompts. Give {n} different variations of the user's prompt. Keep its subject and words, "
    "and change one thing each time: the pose or action, the setting, the time of day, or the framing. "
    "Each variation is a short prompt of one line."
)


class VariationsOut(BaseModel):
    """The LLM's answer: the variations (their count is checked against the request)."""

    model_config = ConfigDict(extra="forbid")
    variations: list[Annotated[str, Field(pattern=PATTERN)]] = Field(min_length=1, max_length=MAX_COUNT)


def variations_schema(n: int) -> dict:
    """Exactly `n` one-line prompts."""
    item = {"type": "string", "pattern": PATTERN}
    return {
        "type": "object",
        "properties": {"variations": {"type": "array", "items": item, "minItems": n, "maxItems": n}},
        "required": ["variations"],
        "additionalProperties": False,
    }


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def usable(original: str, candidate: str, taken: set[str]) -> bool:
    """A variation keeps most of the original's content words, differs from it and from those taken."""
    key = _key(candidate)
    if not key or key == _key(original) or key in taken:
        return False
    before = content_words(original)
    return not before or len(before & content_words(candidate)) * 2 >= len(before)


def rule_variations(prompt: str, n: int, taken: set[str] | None = None) -> list[str]:
    """`n` variations of `prompt` from RULE_VARIATIONS, skipping ones already in `taken` (keys)."""
    base = " ".join(prompt.split()).rstrip(" ,.")
    taken = set(taken or ())
    out = []
    for extra in RULE_VARIATIONS:
        if len(out) == n:
            break
        if extra.lower() in base.lower():
            continue
        candidate = f"{base}, {extra}"
        if _key(candidate) not in taken:
            out.append(candidate)
            taken.add(_key(candidate))
    return out


def merge(prompt: str, proposed: list[str], n: int) -> tuple[list[str], int]:
    """The usable proposals (at most n) topped up by rule variations; also how many came from the proposals."""
    taken: set[str] = set()
    kept = []
    for p in proposed:
        p = " ".join(p.split())
        if len(kept) < n and usable(prompt, p, taken):
            kept.append(p)
            taken.add(_key(p))
    return kept + rule_variations(prompt, n - len(kept), taken), len(kept)


async def _ask_llm(ctx: ToolContext, prompt: str, n: int) -> list[str]:
    llm = ctx.services.llm
    if llm is None:
        raise LlmError("no language model is configured")
    messages = [
        {"role": "system", "content": INSTRUCTIONS.format(n=n)},
        {"role": "user", "content": prompt},
    ]
    reply = await llm.achat(messages, grammar_safe(variations_schema(n)), max_tokens=VARIATIONS_MAX_TOKENS)
    return validated(reply, VariationsOut).variations


async def prompt_variations(
    ctx: ToolContext,
    prompt: Annotated[str, Field(min_length=1, max_length=VARIATION_CHARS)],
    count: Annotated[int, Field(ge=MIN_COUNT, le=MAX_COUNT)] = DEFAULT_COUNT,
) -> dict:
    """Write `count` distinct variations of a prompt (pose, setting, light, framing), keeping its subject.

    Args:
        prompt: The prompt to vary, e.g. "a cat".
        count: How many variations (2 to 8).
    """
    prompt = " ".join(prompt.split())
    if not prompt:
        raise ToolError("the prompt is empty")
    if len(prompt) > VARIATION_CHARS:
        raise ToolError(f"the prompt is {len(prompt)} characters; variations take at most {VARIATION_CHARS}")
    if not MIN_COUNT <= count <= MAX_COUNT:
        raise ToolError(f"ask for {MIN_COUNT} to {MAX_COUNT} variations, not {count}")
    try:
        proposed = await _ask_llm(ctx, prompt, count)
    except LlmError as e:  # BadAction included: the model's JSON was invalid
        log.info("prompt_variations: LLM answer unusable (%s); using rules", e)
        proposed = []
    out, from_llm = merge(prompt, proposed, count)
    source = "llm" if from_llm == count else "rules" if from_llm == 0 else "llm+rules"
    return {"prompt": prompt, "variations": out, "source": source}
