"""Terminal commands for the creation tools: /describe (and the others that build on attached images)."""

from __future__ import annotations

from typing import Any

from bot.usecases import blend
from bot.usecases.animate import animate_payload, parse_animate, save_attachment
from bot.usecases.describe import describe_image, describe_text
from bot.usecases.errors import UserError
from engine.jobs.policy import Requester

COMMANDS = ("describe", "blend", "animate")
HELP = """  /describe [PRESET]   four prompts that would make the attached (or your last) image
  /blend [--weights 1,0.5] [PROMPT]  blend 2-5 /attach'ed images into one (a weight per image)
  /animate [--frames N] [--fps N] [--seed N] PROMPT  a short MP4 clip (of the /attach'ed image, if any)"""


async def run(chat: Any, name: str, arg: str) -> str:
    """Run one creation command for a TerminalChat (bot.chat); its pending attachments are used up."""
    if name == "describe":
        return await _describe(chat, arg)
    if name == "blend":
        return await _blend(chat, arg)
    if name == "animate":
        return await _animate(chat, arg)
    raise UserError(f"unknown command /{name}")


async def _describe(chat: Any, arg: str) -> str:
    image = chat.pending[0].data if chat.pending else None
    who = Requester(chat.user_id)
    result = await describe_image(
        chat.agent.orchestrator.services, who, image=image,
        generation_id=None if image else chat.last_generation, preset=arg.strip() or None,
    )  # fmt: skip
    chat.pending = chat.pending[1:] if image else chat.pending
    return describe_text(result)


def parse_blend(arg: str) -> tuple[str | None, str]:
    """(weights, prompt) from "/blend [--weights 1,0.5] [prompt]"."""
    words, weights, prompt = arg.split(), None, []
    i = 0
    while i < len(words):
        name, _, value = words[i].partition("=")
        if name == "--weights":
            if not value:
                if i + 1 >= len(words):
                    raise UserError("--weights needs values, e.g. --weights 1,0.5")
                value, i = words[i + 1], i + 1
            weights = value
        elif words[i].startswith("--"):
            raise UserError(f"unknown option {words[i]}; /blend takes --weights 1,0.5 and a prompt")
        else:
            prompt.append(words[i])
        i += 1
    return weights, " ".join(prompt)


async def _blend(chat: Any, arg: str) -> str:
    weights, prompt = parse_blend(arg)
    engine = chat.engine
    paths = await blend.save_attachments(engine.settings, chat.pending)
    payload = await blend.blend_payload(
        engine, paths, user_id=chat.user_id, guild_id=0, weights=weights, prompt=prompt or None
    )
    chat.pending = []
    return await chat._run(payload)


async def _animate(chat: Any, arg: str) -> str:
    """Queue an 'animate' job (from the first attached image, if any), wait, and say where the clip is."""
    prompt, options = parse_animate(arg)
    engine = chat.engine
    image = await save_attachment(engine.settings, chat.pending[0]) if chat.pending else None
    payload = animate_payload(prompt, image=image, **options)
    job_id = await engine.submit("animate", payload, user_id=chat.user_id)
    chat.pending = chat.pending[1:]
    job = await chat._finish(job_id)
    shown = job["error"] or "\n".join(job["images"]) or f"job #{job_id}: {job['state']}"
    return f"{shown}\n{job['notes']}" if job["notes"] else shown
