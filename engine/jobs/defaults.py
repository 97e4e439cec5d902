"""Where a generation setting comes from, in one place: the request, then the user, then the guild, then the
preset, then the config.

- request: what this request says (an explicit value always wins, even "" for "no style");
- user: the user's saved defaults (/settings), for DEFAULT_KEYS only;
- guild: the guild's saved defaults (admins), for DEFAULT_KEYS only;
- preset: the image preset's own values (steps, cfg, scheduler, size, negative set, style);
- config: generation.* (the default preset, the safety policy, limits).
The seed is not a default: a job without one gets a random seed once, when it is submitted.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.config import SAFETY_POLICIES
from engine.store.library import Saved, SettingsStore

DEFAULT_KEYS = ("preset", "style", "aspect", "negative", "count", "steps", "cfg", "scheduler", "draft")


def saved_defaults(saved: Saved) -> dict[str, object]:
    """The user's saved defaults over the guild's (only DEFAULT_KEYS)."""
    return {k: v for src in (saved.guild, saved.user) for k, v in src.items() if k in DEFAULT_KEYS}


def pick(request: object, saved: Mapping[str, object], key: str, preset: object = None) -> object:
    """The first value given: the request's, the saved default for `key`, then the preset's."""
    for value in (request, saved.get(key), preset):
        if value is not None:
            return value
    return None


async def safety_policy(settings: SettingsStore, guild_id: int, configured: str) -> str:
    """The guild's safety policy (block / spoiler / off), else generation.safety; ValueError when unknown."""
    return policy_of(await settings.get("guild", guild_id) if guild_id else {}, configured)


def policy_of(guild: Mapping[str, object], configured: str) -> str:
    """The safety policy in these guild settings, else `configured`; ValueError when unknown."""
    policy = guild.get("safety") or configured
    if policy not in SAFETY_POLICIES:
        raise ValueError(f"this server's safety setting {policy!r} is not one of {', '.join(SAFETY_POLICIES)}")
    return str(policy)
