"""One agent turn for any front: the turn as the front sees it in, what to render out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bot.agent import Agent, AgentResult
from bot.conversation import ChatLine, Turn
from tools.context import Attachment
from tools.orchestrator import ToolCall

__all__ = ["AgentOutput", "Attachment", "TurnSpec", "agent_output", "make_turn", "run_agent"]


@dataclass
class TurnSpec:
    """One user turn as a front hands it over (platform identity, reply chain, images)."""

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
    tool_calls: list[ToolCall] = field(default_factory=list)
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
    """The parts of an AgentResult a front renders."""
    return AgentOutput(
        text=result.reply or "",
        tool_calls=list(result.tool_calls),
        job_ids=[int(j) for j in result.job_ids],
        images=[Path(p) for p in result.images],
        followups=[str(f) for f in result.follow_ups],
    )


async def run_agent(agent: Agent, spec: TurnSpec) -> AgentOutput:
    """Run one agent turn and normalize its result."""
    return agent_output(await agent.run(make_turn(spec)))
