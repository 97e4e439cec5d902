"""The enhance_prompt tool: rewrite a prompt for the model family with the LLM, or with fixed rules."""

from __future__ import annotations

import logging
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from engine.runtime.llm import LlmError, validated
from engine.store.library import UnknownEntry
from tools.context import ToolContext, ToolError
from tools.prompts import FamilyRules, fill, shipped_prompts
from tools.registry import Choices, grammar_safe

log = logging.getLogger(__name__)
MAX_PROMPT = 1000
ENHANCE_MAX_TOKENS = 200
_WORD = re.compile(r"[^\W\d_]{3,}")
ENHANCE_SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": 600},
        "changes": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 120},
            "maxItems": 5,
        },
    },
    "required": ["prompt", "changes"],
    "additionalProperties": False,
}


class Enhanced(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT)]
    changes: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(max_length=5)


def content_words(text: str) -> set[str]:
    """Lower-case words of 3+ letters."""
    return {w.lower() for w in _WORD.findall(text)}


def unusable(original: str, new: str) -> str | None:
    """Why an LLM rewrite cannot be used (None when it is fine)."""
    if not new.strip():
        return "it was empty"
    if " ".join(new.split()).lower() == " ".join(original.split()).lower():
        return "it did not change anything"
    before = content_words(original)
    if before and len(before & content_words(new)) * 2 < len(before):
        return "it dropped most of the original words"
    return None


def rule_rewrite(prompt: str, family: str, rules: FamilyRules) -> tuple[str, list[str]]:
    """Deterministic rewrite: tidy spacing, drop repeated terms, add the family's suffix terms."""
    changes: list[str] = []
    tidy = " ".join(prompt.split())
    if tidy != prompt.strip():
        changes.append("tidied spacing")
    terms: dict[str, str] = {}
    for term in (t.strip() for t in tidy.split(",")):
        if not term:
            continue
        if term.lower() in terms:
            changes.append(f"removed repeated '{term}'")
        else:
            terms[term.lower()] = term
    out = list(terms.values())
    if family == "flux":
        text = ", ".join(out).rstrip(".")
        text = text[:1].upper() + text[1:] + "."
        extra = [s for s in rules.fallback_suffix if s.lower() not in text.lower()]
        changes += [f"added '{s}'" for s in extra]
        return " ".join([text, *extra])[:MAX_PROMPT], changes
    for suffix in rules.fallback_suffix:
        if suffix.lower() not in terms:
            out.append(suffix)
            changes.append(f"added '{suffix}'")
    return ", ".join(out)[:MAX_PROMPT], changes


async def _family(ctx: ToolContext, preset: str | None) -> str:
    name = preset or ctx.settings.generation.default_preset
    try:
        data = await ctx.store.presets.resolve("image", name, ctx.user_id, ctx.guild_id)
    except UnknownEntry:
        if preset:
            raise
        return "sd15"
    return str(data.get("family") or "sd15")


async def _ask_llm(ctx: ToolContext, prompt: str, family: str, rules: FamilyRules) -> Enhanced:
    llm = ctx.services.llm
    if llm is None:
        raise LlmError("no language model is configured")
    system = fill(shipped_prompts().enhance.instructions, family=family, guidance=rules.guidance)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    reply = await llm.achat(messages, grammar_safe(ENHANCE_SCHEMA), max_tokens=ENHANCE_MAX_TOKENS)
    return validated(reply, Enhanced)


async def enhance_prompt(
    ctx: ToolContext,
    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT)],
    preset: Annotated[str, Choices("preset")] | None = None,
) -> dict:
    """Rewrite a prompt so it works better for the chosen image model; lists each change.

    Args:
        prompt: The prompt to improve.
        preset: Image preset whose model family the prompt is for; omit for the default.
    """
    if not prompt.strip():
        raise ToolError("the prompt is empty")
    family = await _family(ctx, preset)
    rules = shipped_prompts().enhance.family.get(family) or shipped_prompts().enhance.family["sd15"]
    try:
        out = await _ask_llm(ctx, prompt, family, rules)
        reason = unusable(prompt, out.prompt)
    except LlmError as e:  # BadAction included: the model's JSON was invalid
        reason = str(e)
    if reason is None:
        changes = [c.strip() for c in out.changes if c.strip()] or [f"rewrote for {family}"]
        return {"prompt": out.prompt.strip(), "changes": changes, "family": family, "source": "llm"}
    log.info("enhance_prompt: LLM rewrite unusable (%s); using rules", reason)
    new, changes = rule_rewrite(prompt, family, rules)
    return {"prompt": new, "changes": changes or ["no changes needed"], "family": family, "source": "rules"}
