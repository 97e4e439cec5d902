"""A user's defaults and history, and the /imagine payload built from them."""

from __future__ import annotations

from typing import Any

from bot.usecases import style_codes, tag_search
from bot.usecases.errors import UserError
from bot.usecases.library import defaults, preset_of, style_of
from bot.usecases.quality import vram_text
from bot.usecases.text import clip
from engine.core import Engine
from engine.runtime.diffusion.request import ASPECTS
from engine.store.history import HistoryQueryError, Scope

USER_SETTING_KEYS = ("preset", "style", "aspect", "negative", "count", "cache", "draft")


async def imagine_payload(
    engine: Engine, *, user_id: int, guild_id: int, prompt: str, preset: str | None = None, style: str | None = None,
    aspect: str | None = None, count: int | None = None, seed: int | None = None, negative: str | None = None,
    init_image: str | None = None, draft: bool | None = None, style_code: str | None = None,
    best_of: int | None = None,
) -> dict:  # fmt: skip
    """Validate /imagine options against defaults and limits (the submission checks preset and style names);
    return the 'generate' payload."""
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty")
    settings = engine.settings
    if aspect is not None and aspect not in ASPECTS:
        raise UserError(f"unknown aspect '{aspect}'; choose one of: {', '.join(ASPECTS)}")
    if count is None:
        count = int((await defaults(engine, user_id, guild_id)).get("count", 1))
    if not 1 <= count <= settings.generation.max_batch:
        raise UserError(f"count must be between 1 and {settings.generation.max_batch}, got {count}")
    if seed is not None and seed < 0:
        raise UserError(f"seed must be 0 or more, got {seed}")
    if best_of is not None and not 2 <= best_of <= settings.generation.max_batch:
        raise UserError(f"best_of must be between 2 and {settings.generation.max_batch}, got {best_of}")
    payload = {
        "prompt": prompt.strip(), "preset": preset, "style": style, "aspect": aspect, "count": count, "seed": seed,
        "negative": negative, "source_image": init_image,
        "draft": draft,  # None: the user's saved setting decides
        "best_of": best_of,  # draw this many; the result lists them best first by CLIP score
    }  # fmt: skip
    return {k: v for k, v in payload.items() if v is not None} | style_codes.imagine_field(style_code)


async def history_search(engine: Engine, query: str, user_id: int, guild_id: int, server_wide: bool) -> str:
    """The user's (or the server's) best matching generations, one line each."""
    store = engine.store
    scope = Scope(user_id, guild_id, include_guild=server_wide and bool(guild_id))
    limit = engine.settings.history.page_size
    try:
        page = await tag_search.search(store, query, scope, limit)
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


async def settings_update(engine: Engine, user_id: int, guild_id: int, clear: bool, **values: Any) -> str:
    """Set (or clear) the user's defaults and show the result."""
    st = engine.store.settings
    given = {k: v for k, v in values.items() if v is not None}
    if unknown := set(values) - set(USER_SETTING_KEYS):
        raise UserError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    if "preset" in given:
        given["preset"] = (await preset_of(engine, given["preset"], user_id, guild_id))["name"]
    if "style" in given:
        given["style"] = (await style_of(engine, given["style"], guild_id)).label
    if "aspect" in given and given["aspect"] not in ASPECTS:
        raise UserError(f"unknown aspect '{given['aspect']}'; choose one of: {', '.join(ASPECTS)}")
    top = engine.settings.generation.max_batch
    if "count" in given and not 1 <= given["count"] <= top:
        raise UserError(f"count must be between 1 and {top}, got {given['count']}")
    if clear:
        given = dict.fromkeys(USER_SETTING_KEYS) | given
    data = await st.update("user", user_id, **given) if given else await st.get("user", user_id)
    shown = (
        "\n".join(f"• {k}: `{v}`" for k, v in sorted(data.items())) or "nothing set (server defaults apply)"
    )
    limits = await vram_text(engine, user_id, guild_id, [str(data.get("preset") or engine.default_image_preset)])
    return f"**Your defaults**\n{shown}\n{limits}"
