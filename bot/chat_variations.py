"""Terminal prompt variations: /variations PROMPT [N] shows N variations, /go generates them all."""

from __future__ import annotations

import weakref
from typing import Any

from bot.usecases import variations
from bot.usecases.errors import UserError
from engine.jobs.policy import Requester
from tools.variations import DEFAULT_COUNT

COMMANDS = ("variations", "go")
HELP = """  /variations PROMPT [N]  N variations of a prompt (default 4) to approve
  /go                  generate every variation shown by /variations"""
_proposed: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def parse(arg: str) -> tuple[str, int]:
    """(prompt, count) from "PROMPT [N]": a trailing number is the count."""
    words = arg.split()
    if len(words) > 1 and words[-1].isdigit():
        return " ".join(words[:-1]), int(words[-1])
    return " ".join(words), DEFAULT_COUNT


async def run(chat: Any, name: str, arg: str) -> str:
    """Run /variations or /go for a TerminalChat (bot.chat)."""
    who = Requester(chat.user_id)
    if name == "variations":
        prompt, count = parse(arg)
        if not prompt:
            raise UserError("usage: /variations PROMPT [N]")
        proposal = await variations.propose(chat.agent.orchestrator.services, who, prompt, count)
        _proposed[chat] = proposal.variations
        return variations.variations_text(proposal) + "\nType /go to generate them all."
    prompts = _proposed.pop(chat, None)
    if not prompts:
        raise UserError("nothing to generate: ask for /variations PROMPT first")
    queued = await variations.generate_all(chat.engine, who, prompts)
    lines = [variations.queued_text(queued, len(prompts))]
    for job_id in queued.job_ids:
        job = await chat._finish(job_id)
        lines.append(job["error"] or "\n".join(job["images"]) or f"job #{job_id}: {job['state']}")
    return "\n".join(lines)
