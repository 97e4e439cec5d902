"""Prompt variations for every front: propose N prompts for approval, then queue them all as one batch of jobs.

The proposal lives in the message (Discord) or the chat (terminal) as numbered lines (variations_text), so an
approval after a restart still finds its prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.usecases import account
from bot.usecases.errors import UserError
from engine.core import Engine
from engine.jobs.policy import PermissionDenied, Requester, authorize
from tools.context import Services, ToolContext, ToolError
from tools.errors import USER_ERRORS
from tools.variations import DEFAULT_COUNT, prompt_variations

TOOL = "generate"
_LINE = re.compile(r"^\*\*(?P<n>[1-8])\.\*\*\s+(?P<prompt>.+)$")


@dataclass(frozen=True)
class Proposal:
    """The original prompt, its variations, and whether they came from the LLM or the rules."""

    prompt: str
    variations: list[str]
    source: str


@dataclass
class Queued:
    """The jobs queued for a proposal, and why the rest were not (per-user limits, quota)."""

    job_ids: list[int] = field(default_factory=list)
    refused: str = ""


async def propose(tools: Services, who: Requester, prompt: str, count: int = DEFAULT_COUNT) -> Proposal:
    """N variations of `prompt` for approval; UserError for bad input or when generating is not allowed here."""
    try:
        await authorize(tools.store.settings, who, TOOL)
    except PermissionDenied as e:
        raise UserError(str(e)) from None
    ctx = ToolContext(
        services=tools, user_id=who.user_id, guild_id=who.guild_id, channel_id=who.channel_id, roles=who.roles
    )
    try:
        out = await prompt_variations(ctx, prompt, count)
    except ToolError as e:
        raise UserError(str(e)) from None
    return Proposal(out["prompt"], out["variations"], out["source"])


def variations_text(p: Proposal) -> str:
    """A header with the original prompt, then one numbered variation per line."""
    head = f"**Variations of** “{p.prompt}” ({'from the language model' if 'llm' in p.source else 'by rules'})"
    return "\n".join([head, *(f"**{i}.** {v}" for i, v in enumerate(p.variations, 1))])


def prompts_from_text(text: str) -> list[str]:
    """The numbered variations of a variations_text message, in order; UserError when it has none."""
    found = [m["prompt"].strip() for line in text.splitlines() if (m := _LINE.match(line.strip()))]
    if not found:
        raise UserError("this message holds no prompt variations")
    return found


async def generate_all(engine: Engine, who: Requester, prompts: list[str], preset: str | None = None,
                       reply_to: dict | None = None) -> Queued:  # fmt: skip
    """Queue one generation per prompt, together (compatible ones batch on the GPU); stop at the first refusal."""
    if not prompts:
        raise UserError("there are no variations to generate")
    out = Queued()
    for prompt in prompts:
        try:
            payload = await account.imagine_payload(
                engine, user_id=who.user_id, guild_id=who.guild_id, prompt=prompt, preset=preset
            )
            job = await engine.submit(
                "generate", payload, user_id=who.user_id, guild_id=who.guild_id, channel_id=who.channel_id,
                roles=who.roles, reply_to=reply_to,
            )  # fmt: skip
        except (UserError, *USER_ERRORS) as e:
            if not out.job_ids:
                raise UserError(str(e)) from None
            out.refused = str(e)
            break
        out.job_ids.append(job)
    return out


def queued_text(q: Queued, total: int) -> str:
    """What the user is told after "Generate all"."""
    jobs = ", ".join(f"#{j}" for j in q.job_ids)
    text = f"Queued {len(q.job_ids)} of {total} variations: jobs {jobs}."
    return f"{text} The rest were not queued: {q.refused}" if q.refused else text
