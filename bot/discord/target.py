"""Where a job's progress and result go (a leaf module: buttons, cogs and the poster share it)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.discord.render import ProgressState


def token_expired(created_at: float, now: float | None = None, margin_s: float = 60.0) -> bool:
    """True once an interaction token (valid 15 min) is within margin_s of expiring."""
    return (now if now is not None else time.time()) - created_at > 15 * 60 - margin_s


@dataclass
class Target:
    """Where a job's message lives: an interaction's original response, or a plain bot message."""

    owner_id: int
    channel: Any  # a discord Messageable
    interaction: discord.Interaction | None = None
    message: discord.Message | None = None
    reference_id: int | None = None  # what a channel fallback replies to
    label: str = ""
    state: ProgressState | None = None
    preview: bytes | None = None
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_edit: float = float("-inf")
    done: bool = False
    interim: bool = False  # message is a stand-in created after the token expired
    editor: asyncio.Task | None = None

    def token_valid(self) -> bool:
        """True while the interaction token can still edit the original response."""
        return self.interaction is not None and not token_expired(self.interaction.created_at.timestamp())
