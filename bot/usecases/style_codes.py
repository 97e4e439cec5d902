"""Style codes: share a style or an image preset as a short code (create, show, list, revoke, autocomplete).

A code is resolved into a job's style/preset once, by JobSubmitter (engine.jobs.style_codes); here it is only
created, shown and managed. Unknown, revoked and not-shared codes all read "unknown or not shared with you".
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from bot.usecases.errors import UserError
from bot.usecases.library import preset_of, style_of
from bot.usecases.text import clip
from engine.core import Engine
from engine.presets import ImagePreset
from engine.runtime.diffusion.request import short_errors
from engine.store.style_codes import KINDS, MalformedCode, StyleCode, UnknownCode, normalize

PRESET_SHOWN = ("family", "model", "steps", "cfg", "scheduler", "width", "height", "style")


def check_code(code: str) -> str:
    """The normalized code (upper-case, no dashes); UserError when it cannot be a code."""
    try:
        return normalize(code)
    except MalformedCode as e:
        raise UserError(str(e)) from None


async def _snapshot(
    engine: Engine, kind: str, name: str, user_id: int, guild_id: int
) -> tuple[str, dict, int]:
    """(name, snapshot, author of a guild style) of what the code will expand to."""
    if kind == "style":
        e = await style_of(engine, name, guild_id)
        data = {"label": e.label, "content": e.content, "negative": e.negative, "description": e.description}
        return e.label, data, e.author_id if e.guild_id else 0
    if kind != "preset":
        raise UserError(f"a style code shares a {' or a '.join(KINDS)}, not {kind!r}")
    p = await preset_of(engine, name, user_id, guild_id)
    try:
        preset = ImagePreset.model_validate({k: v for k, v in p.items() if k != "scope"})
    except ValidationError as err:
        raise UserError(f"preset '{p['name']}' is invalid: {short_errors(err)}") from None
    return preset.name, preset.model_dump(), 0


async def create(
    engine: Engine, kind: str, name: str, *, user_id: int, guild_id: int, public: bool = False,
    is_admin: bool = False,
) -> str:  # fmt: skip
    """A new code for a style or preset the user can see (a snapshot: later edits do not change it)."""
    label, data, author = await _snapshot(engine, kind, name, user_id, guild_id)
    if public and author not in (0, user_id) and not is_admin:
        raise UserError(
            f"style '{label}' is another member's; only its author or an admin can make it public"
        )
    code = await engine.store.style_codes.create(
        "style" if kind == "style" else "preset",
        label,
        data,
        user_id=user_id,
        guild_id=guild_id,
        public=public,
    )
    where = "anyone" if public else ("this server" if guild_id else "you only (made outside a server)")
    return (
        f"Style code **{code.code}** → {kind} `{label}`, usable by {where}.\n"
        f"Use it with `/imagine style_code:{code.code}` or `--style-code {code.code}` in chat; "
        f"`/stylecode revoke {code.code}` stops it."
    )


async def resolve(engine: Engine, code: str, user_id: int, guild_id: int) -> StyleCode:
    """The live code as this user sees it; UserError (one message for unknown, revoked, not shared)."""
    key = check_code(code)
    try:
        return await engine.store.style_codes.resolve(key, user_id, guild_id)
    except UnknownCode as e:
        raise UserError(str(e)) from None


def describe(c: StyleCode) -> str:
    """What a code expands to and who made it."""
    where = "public" if c.public else ("this server" if c.guild_id else "private")
    head = f"**{c.code}** → {c.kind} `{c.name}` ({where}), made by <@{c.user_id}> <t:{int(c.created_at)}:R>"
    if c.kind == "style":
        neg = f"\nNegative: `{clip(c.data.get('negative', ''), 300)}`" if c.data.get("negative") else ""
        return f"{head}\nTemplate: `{clip(c.data.get('content', ''), 600)}`{neg}"
    shown = ", ".join(f"{k} {c.data[k]}" for k in PRESET_SHOWN if c.data.get(k) not in (None, ""))
    return f"{head}\n{shown}"


async def show(engine: Engine, code: str, user_id: int, guild_id: int) -> str:
    """What a code expands to and who made it."""
    return describe(await resolve(engine, code, user_id, guild_id))


async def revoke(engine: Engine, code: str, user_id: int) -> str:
    """Revoke one of the user's own codes (jobs already queued with it still run)."""
    key = check_code(code)
    if not await engine.store.style_codes.revoke(key, user_id):
        raise UserError(f"you have no live style code {key}; only its creator can revoke a code")
    return f"Style code {key} is revoked; it no longer works for anyone."


def _line(c: StyleCode, user_id: int) -> str:
    mine = "yours" if c.user_id == user_id else f"by <@{c.user_id}>"
    return f"• `{c.code}` → {c.kind} `{c.name}` ({mine}{', public' if c.public else ''})"


async def listing(engine: Engine, user_id: int, guild_id: int) -> str:
    """The live codes the user can use here: their own and this server's."""
    codes = await engine.store.style_codes.visible(user_id, guild_id)
    lines = [_line(c, user_id) for c in codes]
    return "**Style codes**\n" + ("\n".join(lines) if lines else "none yet: `/stylecode create` makes one")


async def choices(engine: Engine, user_id: int, guild_id: int, current: str) -> list[tuple[str, str]]:
    """(label, code) pairs for autocomplete: visible codes whose code or name contains what was typed."""
    cur = current.strip().lower()
    out: list[tuple[str, str]] = []
    for c in await engine.store.style_codes.visible(user_id, guild_id):
        if cur in c.code.lower() or cur in c.name:
            out.append((clip(f"{c.code} · {c.kind} {c.name}", 100), c.code))
    return out[:25]


def imagine_field(code: str | None) -> dict[str, Any]:
    """The payload field for a code given to /imagine (JobSubmitter resolves it); {} without one."""
    return {"style_code": check_code(code)} if code and code.strip() else {}
