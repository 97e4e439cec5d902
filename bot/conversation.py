"""A turn of conversation, platform-neutral: the reply chain, who asks, and the images that come with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.context import Attachment


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
