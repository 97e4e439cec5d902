"""Web API keys for every front: create (the token is shown once), list, revoke, and who a token acts as.

Each takes the store's ApiKeys (engine.store.apikeys), so the terminal can manage keys without models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.usecases.errors import UserError
from engine.store.apikeys import ApiKey, ApiKeys

MAX_KEYS = 10  # live keys per user and guild
MAX_NAME = 60


@dataclass(frozen=True)
class CreatedKey:
    """A new key as a front shows it, once: the token and the webhook secret."""

    id: int
    token: str
    webhook_secret: str
    prefix: str
    guild_id: int


async def create_key(keys: ApiKeys, user_id: int, guild_id: int, name: str = "") -> CreatedKey:
    """Make a key acting as (user, guild); UserError past MAX_KEYS live keys."""
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise UserError(f"the key name is {len(name)} characters; use at most {MAX_NAME}")
    live = [k for k in await keys.list(user_id, guild_id) if not k.revoked]
    if len(live) >= MAX_KEYS:
        raise UserError(f"you already have {MAX_KEYS} live API keys here; revoke one first")
    new = await keys.create(user_id, guild_id, name)
    return CreatedKey(new.key.id, new.token, new.key.webhook_secret, new.key.prefix, guild_id)


def created_text(key: CreatedKey, public_url: str) -> str:
    """The one message that shows a new key's token and webhook secret."""
    return (
        f"**API key #{key.id} created** (shown once; keep it secret)\n"
        f"Token: `{key.token}`\nWebhook secret: `{key.webhook_secret}`\n"
        f"Use it as `Authorization: Bearer <token>` on {public_url.rstrip('/')}/v1 (docs: /docs)."
    )


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "never"


def key_line(key: ApiKey) -> str:
    """One key, one line: id, prefix, name, scope, use and state."""
    state = f"revoked {_when(key.revoked_at)}" if key.revoked else f"last used {_when(key.last_used_at)}"
    name = f" “{key.name}”" if key.name else ""
    scope = f"guild {key.guild_id}" if key.guild_id else "no guild"
    return f"• #{key.id} `{key.prefix}…`{name} — {scope} — created {_when(key.created_at)} — {state}"


async def list_keys(keys: ApiKeys, user_id: int, guild_id: int | None = None) -> list[ApiKey]:
    """The user's keys (of one guild when given)."""
    return await keys.list(user_id, guild_id)


async def list_text(keys: ApiKeys, user_id: int, guild_id: int | None = None) -> str:
    """The user's keys as a reply."""
    mine = await list_keys(keys, user_id, guild_id)
    if not mine:
        return "You have no API keys. Create one with `/apikey create` (or `atelier keys create`)."
    return "**Your API keys**\n" + "\n".join(key_line(k) for k in mine)


async def revoke_key(keys: ApiKeys, user_id: int, key_id: int) -> str:
    """Revoke one of the user's keys; UserError when it is not theirs or already revoked."""
    if not await keys.revoke(key_id, user_id):
        raise UserError(f"you have no live API key #{key_id}")
    return f"API key #{key_id} revoked; requests with it now get 403."


async def key_of_token(keys: ApiKeys, token: str) -> ApiKey | None:
    """The key a bearer token belongs to (revoked included), or None for an unknown token."""
    if not token or len(token) > 200:
        return None
    return await keys.find(token)
