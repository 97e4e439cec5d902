"""The one adapter between the Discord front and the agent/services: shapes in, shapes out.

Everything the front knows about Services, Agent, Turn, AgentResult and job payloads goes through here,
so a change in those modules is fixed in this file only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.agent import AgentResult
from bot.conversation import ChatLine, Turn
from engine.config import Settings
from engine.store.jobs import Job, JobStore
from tools.context import Attachment

FOLLOWUP_KINDS = ("generate", "variation", "upscale")


class UserError(ValueError):
    """Bad input from a Discord user; the message is shown to them (ephemeral)."""


# -- services -------------------------------------------------------------------------------------


def jobs_of(services: Any) -> JobStore:
    """The JobStore of the services."""
    return services.jobs


def runner_of(services: Any) -> Any:
    """The JobRunner of the services (None for a front without a local runner)."""
    return getattr(services, "runner", None)


def store_of(services: Any) -> Any:
    """The SQLite Store of the services."""
    return services.store


def settings_of(services: Any) -> Settings:
    """The Settings of the services (defaults when they carry none)."""
    return getattr(services, "settings", None) or Settings()


async def submit(
    services: Any, kind: str, payload: dict, *, user_id: int, guild_id: int, channel_id: int, reply_to: dict
) -> int:
    """Enqueue one job and wake the local runner; returns the job id."""
    if hasattr(services, "submit"):
        return await services.submit(
            kind, payload, user_id=user_id, guild_id=guild_id, channel_id=channel_id, reply_to=reply_to
        )
    job_id = await jobs_of(services).enqueue(user_id, guild_id, channel_id, kind, payload, reply_to=reply_to)
    runner = runner_of(services)
    if runner is not None:
        runner.wake()
    return job_id


async def cancel(services: Any, job_id: int, user_id: int) -> str:
    """Cancel a job through the runner (or the store); returns 'cancelled' or 'cancelling'."""
    runner = runner_of(services)
    if runner is not None:
        return await runner.cancel(job_id, user_id)
    return await jobs_of(services).cancel(job_id, user_id)


# -- jobs -----------------------------------------------------------------------------------------


@dataclass
class JobOutput:
    """A finished job's result as the front needs it."""

    generation_id: int | None
    images: list[Path]
    seeds: list[int]
    spoilers: list[bool]


def job_output(job: Job) -> JobOutput:
    """Normalize a job's result dict (generation_id, images, seeds, spoiler flags)."""
    r = job.result or {}
    images = [Path(p) for p in r.get("images") or []]
    spoil = r.get("spoilers", r.get("spoiler", []))
    spoilers = [bool(x) for x in spoil] if isinstance(spoil, list) else [bool(spoil)] * len(images)
    spoilers += [False] * (len(images) - len(spoilers))
    seeds = [int(s) for s in r.get("seeds") or []]
    gen = r.get("generation_id")
    if gen is None and r.get("generation_ids"):
        gen = r["generation_ids"][0]
    return JobOutput(int(gen) if gen is not None else None, images, seeds, spoilers[: len(images)])


def job_prompt(job: Job) -> str:
    """The prompt shown for a job (its own or the one it derives from)."""
    return str(job.payload.get("prompt") or (job.result or {}).get("prompt") or "")


def followup_payload(kind: str, source: Job, index: int | None) -> dict:
    """Payload for reroll ('generate'), V<i> ('variation') or U<i> ('upscale') from a finished job."""
    if kind not in FOLLOWUP_KINDS:
        raise UserError(f"unknown follow-up {kind!r}")
    if source.state != "done":
        raise UserError(f"job #{source.id} is {source.state}; only finished images can be reused")
    if kind == "generate":
        if source.kind != "generate":
            raise UserError(f"job #{source.id} is a {source.kind}; only generations can be rerolled")
        return {k: v for k, v in source.payload.items() if k != "seed"}
    out = job_output(source)
    if out.generation_id is None:
        raise UserError(f"job #{source.id} has no saved generation to reuse")
    if index is None or not 0 <= index < len(out.images):
        raise UserError(f"job #{source.id} has no image {index + 1 if index is not None else '?'}")
    return {"generation_id": out.generation_id, "index": index}


# -- the agent ------------------------------------------------------------------------------------


@dataclass
class TurnSpec:
    """One user turn as the Discord front sees it."""

    text: str
    user_id: int
    guild_id: int = 0
    channel_id: int = 0
    conversation: list[dict] = field(default_factory=list)  # oldest first: {"role", "author", "content"}
    attachments: list[Attachment] = field(default_factory=list)
    replied_generation_id: int | None = None
    roles: tuple[int, ...] = ()
    reply_to: dict = field(default_factory=dict)


@dataclass
class AgentOutput:
    """What the front needs from an agent run."""

    text: str
    tool_calls: list[Any] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)


def make_turn(spec: TurnSpec) -> Turn:
    """Build the agent's Turn: the reply chain as ChatLines, the request last."""
    lines = [
        ChatLine(str(m.get("author", m["role"])), str(m["content"]), m["role"] == "assistant")
        for m in spec.conversation
    ]
    lines.append(ChatLine("user", spec.text or "(no text)", False))
    return Turn(
        conversation=lines,
        user_id=spec.user_id,
        guild_id=spec.guild_id,
        channel_id=spec.channel_id,
        roles=tuple(spec.roles),
        attachments=list(spec.attachments),
        replied_generation_id=spec.replied_generation_id,
        reply_to=dict(spec.reply_to),
    )


def agent_output(result: AgentResult) -> AgentOutput:
    """The parts of an AgentResult the Discord front renders."""
    return AgentOutput(
        text=result.reply or "",
        tool_calls=list(result.tool_calls),
        job_ids=[int(j) for j in result.job_ids],
        images=[Path(p) for p in result.images],
        followups=[str(f) for f in result.follow_ups],
    )


async def run_agent(agent: Any, spec: TurnSpec) -> AgentOutput:
    """Run one agent turn and normalize its result."""
    return agent_output(await agent.run(make_turn(spec)))


async def save_upload(services: Any, data: bytes, filename: str) -> str:
    """Validate an uploaded image (safe decode) and store it as PNG for an img2img job; returns its path."""
    import asyncio
    import hashlib

    from engine.images import decode_image, image_limits

    settings = settings_of(services)
    img = await asyncio.to_thread(decode_image, data, **image_limits(settings.images))
    folder = settings.path("data_dir") / "uploads"  # the engine accepts source images under data_dir only
    dest = folder / f"{hashlib.sha256(data).hexdigest()[:24]}.png"

    def write() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        img.save(dest, format="PNG")

    await asyncio.to_thread(write)
    return str(dest)
