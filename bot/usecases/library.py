"""Presets and styles: list, show, choose, save and delete them (user and guild scopes)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from bot.usecases.errors import UserError
from bot.usecases.text import clip
from engine.core import Engine
from engine.presets import ImagePreset
from engine.runtime.diffusion.request import ASPECTS, aspect_size
from engine.store.library import LibraryEntry, UnknownEntry

PRESET_FIELDS = (
    "model",
    "family",
    "scheduler",
    "steps",
    "cfg",
    "width",
    "height",
    "negative",
    "style",
    "loras",
)


def _scope_ids(scope: str, user_id: int, guild_id: int, is_admin: bool) -> tuple[int, int]:
    """(user_id, guild_id) keys for a 'user' or 'guild' scoped write; guild writes need an admin."""
    if scope == "user":
        return user_id, 0
    if scope != "guild":
        raise UserError(f"scope must be 'user' or 'guild', not {scope!r}")
    if not guild_id:
        raise UserError("guild presets can only be managed inside a server")
    if not is_admin:
        raise UserError("only server admins (Manage Server) can change guild presets")
    return 0, guild_id


async def preset_of(engine: Engine, name: str, user_id: int, guild_id: int) -> dict:
    """A visible image preset by name (UserError naming the choices when unknown)."""
    try:
        return await engine.store.presets.resolve("image", name, user_id, guild_id)
    except UnknownEntry as e:
        raise UserError(str(e)) from None


async def style_of(engine: Engine, label: str, guild_id: int) -> LibraryEntry:
    """A style visible in a guild (UserError naming the choices when unknown)."""
    try:
        return await engine.store.library.get(label, "style", guild_id)
    except UnknownEntry as e:
        raise UserError(str(e)) from None


# -- presets --------------------------------------------------------------------------------------


async def defaults(engine: Engine, user_id: int, guild_id: int) -> dict:
    """Effective defaults: the guild's, overridden by the user's."""
    stored = await engine.store.settings.pair(user_id, guild_id)
    return {**stored.guild, **stored.user}


async def preset_names(engine: Engine, user_id: int, guild_id: int) -> list[str]:
    """Names of the image presets visible to a user."""
    return [p["name"] for p in await engine.store.presets.list("image", user_id, guild_id)]


async def preset_list(engine: Engine, user_id: int, guild_id: int) -> str:
    """One line per visible image preset with its scope; the default is marked."""
    items = await engine.store.presets.list("image", user_id, guild_id)
    current = (await defaults(engine, user_id, guild_id)).get("preset")
    lines = [
        f"{'★' if p['name'] == current else '•'} `{p['name']}` ({p['scope']}) — {p.get('family', '?')}, "
        f"{p.get('steps', '?')} steps, {p.get('width', '?')}×{p.get('height', '?')}"
        for p in items
    ]
    return "**Image presets**\n" + ("\n".join(lines) if lines else "none")


async def preset_show(engine: Engine, name: str, user_id: int, guild_id: int) -> str:
    """A preset's fields as a JSON block."""
    p = await preset_of(engine, name, user_id, guild_id)
    return f"**{p['name']}** ({p['scope']})\n```json\n{json.dumps(p, indent=2, sort_keys=True)}\n```"


async def preset_use(
    engine: Engine, name: str, scope: str, user_id: int, guild_id: int, is_admin: bool
) -> str:
    """Make a preset the default for the user, or for the guild (admins)."""
    p = await preset_of(engine, name, user_id, guild_id)
    uid, gid = _scope_ids(scope, user_id, guild_id, is_admin)
    table, key = ("user", uid) if uid else ("guild", gid)
    await engine.store.settings.update(table, key, preset=p["name"])
    return f"`{p['name']}` is now the default preset for {'you' if uid else 'this server'}."


async def preset_save(
    engine: Engine,
    name: str,
    *,
    base: str,
    scope: str,
    user_id: int,
    guild_id: int,
    is_admin: bool,
    **overrides: Any,
) -> str:
    """Save a new preset from a base preset plus overrides (validated as an ImagePreset)."""
    src = await preset_of(engine, base, user_id, guild_id)
    uid, gid = _scope_ids(scope, user_id, guild_id, is_admin)
    data = {k: src[k] for k in PRESET_FIELDS if k in src}
    if (aspect := overrides.pop("aspect", None)) is not None:
        if aspect not in ASPECTS:
            raise UserError(f"unknown aspect '{aspect}'; choose one of: {', '.join(ASPECTS)}")
        overrides["width"], overrides["height"] = aspect_size(aspect, src.get("family", "sd15"))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        preset = ImagePreset(name=name.strip().lower(), **data)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise UserError(f"invalid preset: {errs}") from None
    body = preset.model_dump(exclude={"name"})
    await engine.store.presets.save("image", preset.name, body, user_id=uid, guild_id=gid)
    return f"Saved preset `{preset.name}` ({'yours' if uid else 'this server'}), based on `{src['name']}`."


async def preset_delete(
    engine: Engine, name: str, scope: str, user_id: int, guild_id: int, is_admin: bool
) -> str:
    """Delete one of the user's (or, for admins, the guild's) presets."""
    uid, gid = _scope_ids(scope, user_id, guild_id, is_admin)
    if not await engine.store.presets.delete("image", name, user_id=uid, guild_id=gid):
        raise UserError(f"you have no {scope} preset named '{name}' (shipped presets cannot be deleted)")
    return f"Deleted preset `{name.strip().lower()}`."


async def style_names(engine: Engine, guild_id: int) -> list[str]:
    """Style labels visible in a guild."""
    return await engine.store.library.names("style", guild_id)


async def style_list(engine: Engine, guild_id: int) -> str:
    """One line per style with its description."""
    items = await engine.store.library.list("style", guild_id)
    lines = [f"• `{e.label}` — {clip(e.description or e.content, 80)}" for e in items]
    return "**Styles**\n" + ("\n".join(lines) if lines else "none")


async def style_show(engine: Engine, label: str, guild_id: int) -> str:
    """A style's template and negative text."""
    e = await style_of(engine, label, guild_id)
    where = "shipped" if e.shipped else ("this server" if e.guild_id else "global")
    neg = f"\nNegative: `{e.negative}`" if e.negative else ""
    return f"**{e.label}** ({where})\n{e.description}\nTemplate: `{e.content}`{neg}"


async def style_add(
    engine: Engine,
    label: str,
    content: str,
    *,
    guild_id: int,
    user_id: int,
    is_admin: bool,
    negative: str = "",
    description: str = "",
) -> str:
    """Add a style to this guild's library; replacing someone else's (or a shipped one) needs an admin."""
    if not guild_id:
        raise UserError("styles are shared per server; use /style add inside a server")
    lib = engine.store.library
    label = label.strip().lower()
    if not content.strip():
        raise UserError("the style template is empty")
    try:
        existing = await lib.get(label, "style", guild_id)
    except UnknownEntry:
        existing = None
    if existing is not None and existing.author_id != user_id and not is_admin:
        raise UserError(f"style '{label}' already exists; only its author or an admin can replace it")
    try:
        await lib.add(
            label,
            "style",
            content,
            negative=negative,
            description=description,
            guild_id=guild_id,
            author_id=user_id,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    return f"Style `{label}` saved for this server."
