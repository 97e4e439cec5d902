"""Front operations behind the slash commands: validate, call the store/services, return reply text."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from bot.discord import bridge
from bot.discord.bridge import UserError
from bot.discord.render import clip
from engine.diffusion.request import ASPECTS, aspect_size
from engine.presets import ImagePreset
from engine.store.history import HistoryQueryError, Scope
from engine.store.jobs import JobError
from engine.store.library import UnknownEntry

USER_SETTING_KEYS = ("preset", "style", "aspect", "negative", "count")
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


async def _preset(services: Any, name: str, user_id: int, guild_id: int) -> dict:
    try:
        return await bridge.store_of(services).presets.resolve("image", name, user_id, guild_id)
    except UnknownEntry as e:
        raise UserError(str(e)) from None


async def _style(services: Any, label: str, guild_id: int) -> Any:
    try:
        return await bridge.store_of(services).library.get(label, "style", guild_id)
    except UnknownEntry as e:
        raise UserError(str(e)) from None


async def defaults(services: Any, user_id: int, guild_id: int) -> dict:
    """Effective defaults: the guild's, overridden by the user's."""
    st = bridge.store_of(services).settings
    out = dict(await st.get("guild", guild_id)) if guild_id else {}
    out.update(await st.get("user", user_id))
    return out


async def imagine_payload(
    services: Any,
    *,
    user_id: int,
    guild_id: int,
    prompt: str,
    preset: str | None = None,
    style: str | None = None,
    aspect: str | None = None,
    count: int | None = None,
    seed: int | None = None,
    negative: str | None = None,
    init_image: str | None = None,
) -> dict:
    """Validate /imagine options against defaults, presets and limits; return the 'generate' payload."""
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty")
    d = await defaults(services, user_id, guild_id)
    settings = bridge.settings_of(services)
    if preset:  # defaults are resolved by the job handler; names given here are checked now
        preset = (await _preset(services, preset, user_id, guild_id))["name"]
    if style:
        style = (await _style(services, style, guild_id)).label
    if aspect is not None and aspect not in ASPECTS:
        raise UserError(f"unknown aspect '{aspect}'; choose one of: {', '.join(ASPECTS)}")
    count = count if count is not None else int(d.get("count", 1))
    if not 1 <= count <= settings.generation.max_batch:
        raise UserError(f"count must be between 1 and {settings.generation.max_batch}, got {count}")
    if seed is not None and seed < 0:
        raise UserError(f"seed must be 0 or more, got {seed}")
    payload = {
        "prompt": prompt.strip(),
        "preset": preset,
        "style": style,
        "aspect": aspect,
        "count": count,
        "seed": seed,
        "negative": negative,
        "source_image": init_image,
    }
    return {k: v for k, v in payload.items() if v is not None}


# -- presets --------------------------------------------------------------------------------------


async def preset_names(services: Any, user_id: int, guild_id: int) -> list[str]:
    """Names of the image presets visible to a user."""
    return [p["name"] for p in await bridge.store_of(services).presets.list("image", user_id, guild_id)]


async def preset_list(services: Any, user_id: int, guild_id: int) -> str:
    """One line per visible image preset with its scope; the default is marked."""
    items = await bridge.store_of(services).presets.list("image", user_id, guild_id)
    current = (await defaults(services, user_id, guild_id)).get("preset")
    lines = [
        f"{'★' if p['name'] == current else '•'} `{p['name']}` ({p['scope']}) — {p.get('family', '?')}, "
        f"{p.get('steps', '?')} steps, {p.get('width', '?')}×{p.get('height', '?')}"
        for p in items
    ]
    return "**Image presets**\n" + ("\n".join(lines) if lines else "none")


async def preset_show(services: Any, name: str, user_id: int, guild_id: int) -> str:
    """A preset's fields as a JSON block."""
    p = await _preset(services, name, user_id, guild_id)
    return f"**{p['name']}** ({p['scope']})\n```json\n{json.dumps(p, indent=2, sort_keys=True)}\n```"


async def preset_use(
    services: Any, name: str, scope: str, user_id: int, guild_id: int, is_admin: bool
) -> str:
    """Make a preset the default for the user, or for the guild (admins)."""
    p = await _preset(services, name, user_id, guild_id)
    uid, gid = _scope_ids(scope, user_id, guild_id, is_admin)
    table, key = ("user", uid) if uid else ("guild", gid)
    await bridge.store_of(services).settings.update(table, key, preset=p["name"])
    return f"`{p['name']}` is now the default preset for {'you' if uid else 'this server'}."


async def preset_save(
    services: Any,
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
    src = await _preset(services, base, user_id, guild_id)
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
    await bridge.store_of(services).presets.save("image", preset.name, body, user_id=uid, guild_id=gid)
    return f"Saved preset `{preset.name}` ({'yours' if uid else 'this server'}), based on `{src['name']}`."


async def preset_delete(
    services: Any, name: str, scope: str, user_id: int, guild_id: int, is_admin: bool
) -> str:
    """Delete one of the user's (or, for admins, the guild's) presets."""
    uid, gid = _scope_ids(scope, user_id, guild_id, is_admin)
    if not await bridge.store_of(services).presets.delete("image", name, user_id=uid, guild_id=gid):
        raise UserError(f"you have no {scope} preset named '{name}' (shipped presets cannot be deleted)")
    return f"Deleted preset `{name.strip().lower()}`."


# -- styles ---------------------------------------------------------------------------------------


async def style_names(services: Any, guild_id: int) -> list[str]:
    """Style labels visible in a guild."""
    return await bridge.store_of(services).library.names("style", guild_id)


async def style_list(services: Any, guild_id: int) -> str:
    """One line per style with its description."""
    items = await bridge.store_of(services).library.list("style", guild_id)
    lines = [f"• `{e.label}` — {clip(e.description or e.content, 80)}" for e in items]
    return "**Styles**\n" + ("\n".join(lines) if lines else "none")


async def style_show(services: Any, label: str, guild_id: int) -> str:
    """A style's template and negative text."""
    e = await _style(services, label, guild_id)
    where = "shipped" if e.shipped else ("this server" if e.guild_id else "global")
    neg = f"\nNegative: `{e.negative}`" if e.negative else ""
    return f"**{e.label}** ({where})\n{e.description}\nTemplate: `{e.content}`{neg}"


async def style_add(
    services: Any,
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
    lib = bridge.store_of(services).library
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


# -- history, settings, queue ---------------------------------------------------------------------


async def history_search(services: Any, query: str, user_id: int, guild_id: int, server_wide: bool) -> str:
    """The user's (or the server's) best matching generations, one line each."""
    store = bridge.store_of(services)
    scope = Scope(user_id, guild_id, include_guild=server_wide and bool(guild_id))
    limit = bridge.settings_of(services).history.page_size
    try:
        page = await store.history.search(query, scope, limit=limit)
    except HistoryQueryError as e:
        raise UserError(str(e)) from None
    if not page.items:
        return f"No generations match “{clip(query, 100)}”."
    lines = [
        f"• #{g.id} <t:{int(g.created_at)}:R> seed {g.seed}{' ⭐' if g.favorite else ''} — {clip(g.prompt, 120)}"
        for g in page.items
    ]
    more = "\n…more results; refine the search" if page.next_cursor else ""
    return f"**History: {clip(query, 100) or 'recent'}**\n" + "\n".join(lines) + more


async def settings_update(services: Any, user_id: int, guild_id: int, clear: bool, **values: Any) -> str:
    """Set (or clear) the user's defaults and show the result."""
    st = bridge.store_of(services).settings
    given = {k: v for k, v in values.items() if v is not None}
    if unknown := set(values) - set(USER_SETTING_KEYS):
        raise UserError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    if "preset" in given:
        given["preset"] = (await _preset(services, given["preset"], user_id, guild_id))["name"]
    if "style" in given:
        given["style"] = (await _style(services, given["style"], guild_id)).label
    if "aspect" in given and given["aspect"] not in ASPECTS:
        raise UserError(f"unknown aspect '{given['aspect']}'; choose one of: {', '.join(ASPECTS)}")
    if clear:
        given = dict.fromkeys(USER_SETTING_KEYS) | given
    data = await st.update("user", user_id, **given) if given else await st.get("user", user_id)
    shown = (
        "\n".join(f"• {k}: `{v}`" for k, v in sorted(data.items())) or "nothing set (server defaults apply)"
    )
    return f"**Your defaults**\n{shown}"


async def queue_text(services: Any, user_id: int) -> str:
    """The user's queued and running jobs with their queue positions."""
    jobs = bridge.jobs_of(services)
    mine = await jobs.user_jobs(user_id)
    counts = await jobs.counts()
    head = f"Queue: {counts['queued']} waiting, {counts['running']} running."
    workers = await services.workers() if hasattr(services, "workers") else []
    if workers:
        names = ", ".join(str(w.get("id", "?")) for w in workers)
        head += f"\nWorkers: {len(workers)} online ({clip(names, 200)})."
    lines = []
    for j in mine:
        if j.state == "running":
            p = j.progress or {}
            step = f" step {p.get('step')}/{p.get('total')}" if p.get("total") else ""
            lines.append(f"• #{j.id} {j.kind} — running{step} — {clip(bridge.job_prompt(j), 80)}")
        else:
            pos = await jobs.position(j.id)
            lines.append(f"• #{j.id} {j.kind} — position {pos} — {clip(bridge.job_prompt(j), 80)}")
    return head + ("\n" + "\n".join(lines) if lines else "\nYou have no pending jobs.")


async def cancel_job(services: Any, user_id: int, job_id: int | None) -> str:
    """Cancel a job (default: the user's newest pending one)."""
    if job_id is None:
        mine = await bridge.jobs_of(services).user_jobs(user_id)
        if not mine:
            raise UserError("you have no queued or running jobs to cancel")
        job_id = mine[-1].id
    try:
        outcome = await bridge.cancel(services, job_id, user_id)
    except JobError as e:
        raise UserError(str(e)) from None
    return f"Job #{job_id} {'cancelled' if outcome == 'cancelled' else 'is stopping'}."


def token_expired(created_at: float, now: float | None = None, margin_s: float = 60.0) -> bool:
    """True once an interaction token (valid 15 min) is within margin_s of expiring."""
    return (now if now is not None else time.time()) - created_at > 15 * 60 - margin_s
