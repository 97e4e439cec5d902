"""The web gallery, front-neutral: login links, sessions, whose images a session sees, pages, shares.

Who sees what: a session sees its user's generations. When the login link was made in a guild whose
settings have `"gallery_shared": true`, it also sees that guild's generations (read-only: favorite, delete
and share stay the owner's).
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field

from bot.usecases.errors import UserError
from engine.core import Engine
from engine.store.history import Generation, HistoryQueryError, Scope
from engine.store.web import GalleryFilter, ShareLink, WebSession

LOGIN_TTL_S = 10 * 60  # a login link works once, within ten minutes
SESSION_TTL_S = 7 * 24 * 3600  # a browser stays signed in for a week
PAGE_SIZE = 60
GUILD_SHARED_KEY = "gallery_shared"


@dataclass
class Detail:
    """Everything the image page shows."""

    gen: Generation
    mine: bool
    parent: Generation | None
    children: list[Generation]
    shares: list[ShareLink] = field(default_factory=list)
    imagine: str = ""
    controls: list[dict] = field(default_factory=list)


async def login_link(engine: Engine, user_id: int, guild_id: int = 0) -> str:
    """A short-lived single-use sign-in URL for the gallery."""
    if user_id <= 0:
        raise UserError("a user id is a positive number")
    token = await engine.store.web.create_login(user_id, guild_id, LOGIN_TTL_S)
    return f"{engine.settings.web.public_url.rstrip('/')}/login/{token}"


async def sign_in(engine: Engine, token: str) -> tuple[str, WebSession] | None:
    """Trade a login token for a new session (cookie token, session); None if used, expired or unknown."""
    if not token or len(token) > 200:
        return None
    who = await engine.store.web.use_login(token)
    if who is None:
        return None
    return await engine.store.web.create_session(who[0], who[1], SESSION_TTL_S)


async def session_of(engine: Engine, cookie: str | None) -> WebSession | None:
    """The live session of a cookie value, or None."""
    if not cookie or len(cookie) > 200:
        return None
    return await engine.store.web.session(cookie)


async def scope_of(engine: Engine, session: WebSession) -> Scope:
    """The session's user, plus their guild when the guild allows a shared gallery."""
    shared = False
    if session.guild_id:
        shared = (await engine.store.settings.get("guild", session.guild_id)).get(GUILD_SHARED_KEY) is True
    return Scope(session.user_id, session.guild_id, include_guild=shared)


def _day(text: str, name: str) -> float | None:
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{name} must be a date like 2026-12-31, got '{text[:20]}'") from None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()


def parse_filter(q: str = "", favorite: str = "", preset: str = "", style: str = "", since: str = "",
                 until: str = "") -> GalleryFilter:  # fmt: skip
    """The filter of a gallery request (dates are UTC days; `until` includes its day)."""
    end = _day(until, "until")
    return GalleryFilter(
        q=q.strip(), favorite=favorite in ("1", "on", "true"), preset=preset.strip()[:64],
        style=style.strip()[:64], since=_day(since, "since"), until=end + 86400 if end is not None else None,
    )  # fmt: skip


async def gallery_page(
    engine: Engine, session: WebSession, f: GalleryFilter, before: int | None = None
) -> tuple[list[Generation], int | None]:
    """One page of the gallery, newest first: (generations, `before` of the next page or None)."""
    try:
        return await engine.store.web.page(await scope_of(engine, session), f, before, PAGE_SIZE)
    except HistoryQueryError as e:
        raise UserError(str(e)) from None


def imagine_text(g: Generation) -> str:
    """The /imagine command that makes this generation again."""
    parts = [f"prompt:{g.prompt}"]
    for key, value in (("preset", g.preset), ("style", g.style), ("negative", g.negative)):
        if value:
            parts.append(f"{key}:{value}")
    aspect = g.params.get("aspect")
    if isinstance(aspect, str) and aspect:
        parts.append(f"aspect:{aspect}")
    parts.append(f"seed:{g.seed}")
    return "/imagine " + " ".join(parts)


async def detail(engine: Engine, session: WebSession, gen_id: int) -> Detail | None:
    """The image page's data, or None when the session may not see this generation."""
    scope = await scope_of(engine, session)
    g = await engine.store.history.get(gen_id, scope)
    if g is None:
        return None
    parent = await engine.store.history.get(g.parent_id, scope) if g.parent_id else None
    mine = g.user_id == session.user_id
    shares = await engine.store.web.shares(g.id, session.user_id) if mine else []
    controls = [c for c in g.params.get("controls", []) if isinstance(c, dict)]
    children = await engine.store.web.children(g.id, scope)
    return Detail(g, mine, parent, children, shares, imagine_text(g), controls)


async def set_favorite(engine: Engine, session: WebSession, gen_id: int, on: bool) -> None:
    """Favorite or unfavorite one of the session user's generations."""
    if not await engine.store.history.set_favorite(gen_id, session.user_id, on):
        raise UserError(f"generation #{gen_id} is not one of yours")


async def delete(engine: Engine, session: WebSession, gen_id: int) -> list[str]:
    """Delete one of the session user's generations; return its files (images, thumbnails, control maps)."""
    thumbs = await engine.store.web.thumbnails([gen_id])
    g = await engine.store.history.delete(gen_id, session.user_id)
    if g is None:
        raise UserError(f"generation #{gen_id} is not one of yours")
    maps = [c.get("map") for c in g.params.get("controls", []) if isinstance(c, dict)]
    return [p for p in (*g.images, *thumbs.values(), *maps) if isinstance(p, str)]


async def create_share(engine: Engine, session: WebSession, gen_id: int) -> str:
    """A share URL that shows this one generation to anyone who has it."""
    token = await engine.store.web.create_share(gen_id, session.user_id)
    if token is None:
        raise UserError(f"generation #{gen_id} is not one of yours")
    return f"{engine.settings.web.public_url.rstrip('/')}/s/{token}"


async def revoke_share(engine: Engine, session: WebSession, share_id: int) -> None:
    """Stop a share link from working."""
    if not await engine.store.web.revoke_share(share_id, session.user_id):
        raise UserError("that share link is not yours or is already revoked")


async def shared(engine: Engine, token: str) -> Generation | None:
    """The generation a share token shows (None if unknown or revoked)."""
    if not token or len(token) > 200:
        return None
    return await engine.store.web.shared(token)


def terminal_hint(url: str) -> str:
    """What `atelier gallery` prints."""
    mins = LOGIN_TTL_S // 60
    return f"Open this link within {mins} minutes (it works once):\n{url}\n(or: xdg-open {shlex.quote(url)})"
