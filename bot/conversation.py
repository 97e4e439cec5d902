"""A turn of conversation (platform-neutral) and the chat messages the agent sends to the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.diffusion.request import ASPECTS
from tools.context import Attachment
from tools.prompts import AgentPrompts, fill
from tools.registry import Registry, ToolSpec

MAX_REQUEST_CHARS = 2000
MAX_HISTORY_CHARS = 800
HISTORY_BUDGET_CHARS = 4000
CUT = " ...(cut)"


@dataclass(frozen=True)
class ChatLine:
    """One message of the reply chain: who wrote it, what it says, and whether the bot wrote it."""

    author: str
    content: str
    from_bot: bool = False


@dataclass
class Turn:
    """Everything the agent gets for one request; identity fields come from the platform, never the model."""

    conversation: list[ChatLine]
    user_id: int
    guild_id: int = 0
    channel_id: int = 0
    roles: tuple[int, ...] = ()
    attachments: list[Attachment] = field(default_factory=list)
    replied_generation_id: int | None = None
    reply_to: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.conversation or self.conversation[-1].from_bot:
            raise ValueError("a turn needs a conversation that ends with the user's message")

    @property
    def text(self) -> str:
        """The user's request (the last message)."""
        return self.conversation[-1].content

    @property
    def has_image(self) -> bool:
        """True when the request comes with an image: a non-empty attachment or a replied-to generation."""
        return self.replied_generation_id is not None or any(a.data for a in self.attachments)


def cut(text: str, limit: int) -> str:
    """Text shortened to `limit` characters with a visible marker."""
    return text if len(text) <= limit else text[: max(0, limit - len(CUT))] + CUT


def tool_line(spec: ToolSpec, note: str) -> str:
    """One compact line per tool: name(args, * = required): description and note (details live in the schema)."""
    args = ", ".join(f"{p.name}{'*' if p.required else ''}" for p in spec.params)
    return f"- {spec.name}({args}): {spec.description} {note}".rstrip()


def system_prompt(prompts: AgentPrompts, registry: Registry, choices: Mapping[str, list[str]]) -> str:
    """The system message: the template filled with tools and the names known for this guild/user."""
    tools = "\n".join(tool_line(s, prompts.tool_notes.get(s.name, "")) for s in registry.specs)
    return fill(
        prompts.system,
        tools=tools,
        styles=", ".join(choices.get("style", [])) or "(none)",
        presets=", ".join(choices.get("preset", [])) or "(none)",
        aspects=", ".join(ASPECTS),
    )


def history_messages(turn: Turn, max_turns: int) -> list[dict]:
    """Earlier messages of the reply chain (newest kept first within a character budget)."""
    out: list[dict] = []
    budget = HISTORY_BUDGET_CHARS
    for line in reversed(turn.conversation[:-1][-max_turns:]):
        text = cut(line.content, MAX_HISTORY_CHARS)
        content = text if line.from_bot else f"{cut(line.author, 64)}: {text}"
        budget -= len(content)
        if budget < 0:
            break
        out.append({"role": "assistant" if line.from_bot else "user", "content": content})
    return list(reversed(out))


def request_message(turn: Turn, notes: list[str]) -> dict:
    """The user's request with context notes (replied-to generation, attachments) after it."""
    text = f"{cut(turn.conversation[-1].author, 64)}: {cut(turn.text, MAX_REQUEST_CHARS)}"
    if notes:
        text += "\n\n[context] " + " ".join(notes)
    return {"role": "user", "content": text}
