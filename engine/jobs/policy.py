"""Who may do what in a guild: the guild's tool policy, checked on every front (chat, commands, buttons).

The policy lives in the guild settings as {"tools": {"<tool>": {"enabled": bool, "allow_roles": [...],
"deny_roles": [...]}}}. Job kinds map to the tool that makes them (variation and upscale are generate's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.store.library import SettingsStore

TOOL_OF_KIND = {"generate": "generate", "variation": "generate", "upscale": "generate"}
INVALID = "this server's tool settings are invalid; ask an admin to fix them"


class PermissionDenied(Exception):
    """The requester may not use this tool here (guild/role policy); the message is for them."""


@dataclass(frozen=True)
class Requester:
    """Who asks: identity from the platform, never from a model or a payload."""

    user_id: int
    guild_id: int = 0
    channel_id: int = 0
    roles: tuple[int, ...] = ()


def role_rule(policy: object, name: str, roles: tuple[int, ...]) -> str | None:
    """Why the guild policy forbids tool `name` for these roles (None = allowed). A malformed policy denies."""
    if not isinstance(policy, Mapping):
        return INVALID
    rule = policy.get(name, {})
    if not isinstance(rule, Mapping):
        return INVALID
    if rule.get("enabled", True) is False:
        return f"the {name} tool is disabled on this server"
    deny, allow = set(rule.get("deny_roles") or ()), set(rule.get("allow_roles") or ())
    if deny & set(roles):
        return f"your role may not use the {name} tool on this server"
    if allow and not allow & set(roles):
        return f"the {name} tool is limited to certain roles on this server"
    return None


async def authorize(settings: SettingsStore, who: Requester, tool: str) -> None:
    """PermissionDenied when the guild's policy forbids `tool` for the requester's roles."""
    if who.guild_id:
        check_tool(await settings.get("guild", who.guild_id), who, tool)


def check_tool(guild: Mapping[str, object], who: Requester, tool: str) -> None:
    """PermissionDenied when these guild settings forbid `tool` for the requester's roles."""
    reason = role_rule(guild.get("tools", {}), tool, who.roles) if who.guild_id else None
    if reason:
        raise PermissionDenied(reason)
