"""The web gallery's pages: sign-in by login link, the grid (keyset infinite scroll), image pages, shares.

Security: Jinja2 autoescapes everything (a prompt is user text) and a strict CSP forbids inline script;
state-changing POSTs carry the session's CSRF token; files are served by generation id and index, never by a
path from the request, and only from under the outputs folder; tokens are 256-bit and stored hashed.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader

from bot.usecases import gallery as uc
from bot.usecases.errors import UserError
from bot.web.thumbs import Thumbnailer, inside
from engine.core import Engine
from engine.store.history import Generation
from engine.store.web import GalleryFilter, WebSession

HERE = Path(__file__).resolve().parent
COOKIE = "atelier_session"
FILTER_KEYS = ("q", "favorite", "preset", "style", "since", "until")
STATIC = {"gallery.js": "text/javascript", "gallery.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self';"
    " object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_NUMBER = re.compile(r"[0-9]{1,18}")
T = TypeVar("T")

router = APIRouter(include_in_schema=False)
templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, auto_reload=False)


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _thumbs(request: Request) -> Thumbnailer:
    return request.app.state.gallery_thumbs  # made and subscribed to the runner by create_app


def _number(text: str) -> int | None:
    """A path or query number, or None (so '../x', '1.5' or '-1' are simply not found)."""
    return int(text) if _NUMBER.fullmatch(text) else None


def page(name: str, status: int = 200, **ctx: object) -> HTMLResponse:
    """Render a template with the security headers; pages are never cached."""
    html = templates.get_template(name).render(**ctx)
    return HTMLResponse(html, status, headers={**HEADERS, "Cache-Control": "no-store"})


def _message(status: int, title: str, text: str, session: WebSession | None = None) -> HTMLResponse:
    return page("message.html", status, title=title, text=text, session=session)


def _not_found(session: WebSession | None = None) -> HTMLResponse:
    return _message(404, "Not found", "There is nothing here, or it is not yours to see.", session)


def _signed_out() -> HTMLResponse:
    return _message(
        401, "Sign in",
        "Use /gallery in Discord, or `atelier gallery --user ID` in a terminal, to get a sign-in link.",
    )  # fmt: skip


async def _session(request: Request) -> WebSession | None:
    return await uc.session_of(_engine(request), request.cookies.get(COOKIE))


async def _form_session(request: Request) -> tuple[WebSession | None, dict[str, str], HTMLResponse | None]:
    """The session of a state-changing POST after the CSRF check: (session, form, error response)."""
    session = await _session(request)
    if session is None:
        return None, {}, _signed_out()
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
        return (
            None,
            {},
            _message(403, "Forbidden", "That form has expired; reload the page and try again.", session),
        )
    return session, form, None


def _back(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers=HEADERS)


def _query(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "") for k in FILTER_KEYS}


def _cards(gens: list[Generation], nxt: int | None, query: dict[str, str]) -> dict:
    more = None
    if nxt is not None:
        more = "/gallery/page?" + urlencode({**{k: v for k, v in query.items() if v}, "before": nxt})
    return {"gens": gens, "more": more, "spoiler": _spoiler}


def _spoiler(g: Generation, idx: int = 0) -> bool:
    marks = g.params.get("spoilers") or []
    return bool(marks[idx]) if isinstance(marks, list) and idx < len(marks) else False


async def _grid(request: Request, session: WebSession, query: dict[str, str], before: int | None) -> dict:
    engine = _engine(request)
    f: GalleryFilter = uc.parse_filter(**query)
    gens, nxt = await uc.gallery_page(engine, session, f, before)
    await _thumbs(request).missing(gens)
    return _cards(gens, nxt, query)


@router.get("/login/{token}")
async def login(request: Request, token: str) -> Response:
    """Trade a single-use login link for a session cookie, then go to the gallery."""
    found = await uc.sign_in(_engine(request), token)
    if found is None:
        return _message(
            403, "Link expired", "This sign-in link was already used or has expired; ask for a new one."
        )
    cookie, session = found
    resp = _back("/gallery")
    secure = _engine(request).settings.web.public_url.lower().startswith("https://")
    resp.set_cookie(COOKIE, cookie, max_age=uc.SESSION_TTL_S, httponly=True, samesite="lax", secure=secure,
                    path="/")  # fmt: skip
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, _, error = await _form_session(request)
    if error is not None:
        return error
    assert session is not None
    await _engine(request).store.web.end_session(session.id)
    resp = _message(200, "Signed out", "You are signed out of the gallery.")
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/gallery")
async def gallery(request: Request) -> Response:
    """The grid of the session's images, newest first, with search and filters."""
    session = await _session(request)
    if session is None:
        return _signed_out()
    query = _query(request)
    try:
        ctx = await _grid(request, session, query, None)
    except UserError as e:
        return page("gallery.html", 400, session=session, query=query, error=str(e), gens=[], more=None,
                    spoiler=_spoiler)  # fmt: skip
    return page("gallery.html", session=session, query=query, error=None, **ctx)


@router.get("/gallery/page")
async def gallery_more(request: Request) -> Response:
    """The next page of the grid as an HTML fragment (cards and the next page's marker)."""
    session = await _session(request)
    if session is None:
        return _signed_out()
    before = _number(request.query_params.get("before", ""))
    if before is None:
        return _message(400, "Bad page", "before must be a generation id", session)
    try:
        ctx = await _grid(request, session, _query(request), before)
    except UserError as e:
        return _message(400, "Bad search", str(e), session)
    return page("cards.html", **ctx)


@router.get("/gallery/g/{gen_id}")
async def image_page(request: Request, gen_id: str) -> Response:
    """One generation: images, full parameters, seed, control maps, lineage, copy as /imagine, shares."""
    session = await _session(request)
    if session is None:
        return _signed_out()
    return await _detail_page(request, session, gen_id)


async def _detail_page(request: Request, session: WebSession, gen_id: str, new_link: str | None = None,
                       status: int = 200) -> Response:  # fmt: skip
    gid = _number(gen_id)
    d = await uc.detail(_engine(request), session, gid) if gid is not None else None
    if d is None:
        return _not_found(session)
    return page("image.html", status, session=session, d=d, new_link=new_link, spoiler=_spoiler)


async def _on_owned(
    request: Request,
    ids: tuple[str, ...],
    act: Callable[[WebSession, dict[str, str], list[int]], Awaitable[T]],
) -> tuple[WebSession, list[int], T] | HTMLResponse:
    """Run a CSRF-checked POST's use-case on numbered ids: (session, ids, result), or the error or 404 page."""
    session, form, error = await _form_session(request)
    if error is not None:
        return error
    assert session is not None
    nums = [_number(i) for i in ids]
    try:
        if any(n is None for n in nums):
            raise UserError("no such generation")
        numbers = [n for n in nums if n is not None]
        return session, numbers, await act(session, form, numbers)
    except UserError:
        return _not_found(session)


@router.post("/gallery/g/{gen_id}/favorite")
async def favorite(request: Request, gen_id: str) -> Response:
    done = await _on_owned(
        request,
        (gen_id,),
        lambda s, form, ids: uc.set_favorite(_engine(request), s, ids[0], form.get("on") == "1"),
    )
    if isinstance(done, HTMLResponse):
        return done
    return _back(f"/gallery/g/{done[1][0]}")


@router.post("/gallery/g/{gen_id}/delete")
async def delete(request: Request, gen_id: str) -> Response:
    done = await _on_owned(request, (gen_id,), lambda s, _, ids: uc.delete(_engine(request), s, ids[0]))
    if isinstance(done, HTMLResponse):
        return done
    await asyncio.to_thread(_remove_files, done[2], _engine(request).settings.path("outputs"))
    return _back("/gallery")


def _remove_files(files: list[str], root: Path) -> None:
    """Delete a deleted generation's files (only those under the outputs folder)."""
    for name in files:
        if inside(Path(name), root):
            Path(name).unlink(missing_ok=True)


@router.post("/gallery/g/{gen_id}/share")
async def share(request: Request, gen_id: str) -> Response:
    """Make a share link and show it once on the image page (only its hash is kept)."""
    done = await _on_owned(request, (gen_id,), lambda s, _, ids: uc.create_share(_engine(request), s, ids[0]))
    if isinstance(done, HTMLResponse):
        return done
    session, (gid,), link = done
    return await _detail_page(request, session, str(gid), new_link=link, status=201)


@router.post("/gallery/g/{gen_id}/share/{share_id}/revoke")
async def revoke(request: Request, gen_id: str, share_id: str) -> Response:
    done = await _on_owned(
        request, (gen_id, share_id), lambda s, _, ids: uc.revoke_share(_engine(request), s, ids[1])
    )
    if isinstance(done, HTMLResponse):
        return done
    return _back(f"/gallery/g/{done[1][0]}")


async def _visible(request: Request, gen_id: str) -> tuple[WebSession | None, Generation | None]:
    session = await _session(request)
    gid = _number(gen_id)
    if session is None or gid is None:
        return session, None
    scope = await uc.scope_of(_engine(request), session)
    return session, await _engine(request).store.history.get(gid, scope)


def _file(request: Request, name: object, media: str) -> Response:
    """A recorded file, only from under the outputs folder; 404 otherwise."""
    root = _engine(request).settings.path("outputs")
    if not isinstance(name, str) or not inside(Path(name), root) or not Path(name).is_file():
        return _not_found()
    return FileResponse(
        name, media_type=media, headers={**HEADERS, "Cache-Control": "private, max-age=86400"}
    )


def _index(items: list, idx: str) -> object | None:
    i = _number(idx)
    return items[i] if i is not None and i < len(items) else None


@router.get("/gallery/img/{gen_id}/{idx}")
async def image_file(request: Request, gen_id: str, idx: str) -> Response:
    session, g = await _visible(request, gen_id)
    if g is None:
        return _not_found(session)
    return _file(request, _index(g.images, idx), "image/png")


@router.get("/gallery/thumb/{gen_id}/{idx}")
async def thumb_file(request: Request, gen_id: str, idx: str) -> Response:
    session, g = await _visible(request, gen_id)
    i = _number(idx)
    if g is None or i is None:
        return _not_found(session)
    path = await _thumbs(request).path(g, i)
    return _file(request, str(path) if path else None, "image/jpeg")


@router.get("/gallery/map/{gen_id}/{idx}")
async def control_map(request: Request, gen_id: str, idx: str) -> Response:
    session, g = await _visible(request, gen_id)
    if g is None:
        return _not_found(session)
    c = _index([c for c in g.params.get("controls", []) if isinstance(c, dict)], idx)
    return _file(request, c.get("map") if isinstance(c, dict) else None, "image/png")


@router.get("/s/{token}")
async def shared_page(request: Request, token: str) -> Response:
    """A shared generation, for anyone with the link (signed in or not)."""
    g = await uc.shared(_engine(request), token)
    if g is None:
        return _not_found()
    return page("shared.html", g=g, token=token, spoiler=_spoiler, session=None)


@router.get("/s/{token}/img/{idx}")
async def shared_file(request: Request, token: str, idx: str) -> Response:
    g = await uc.shared(_engine(request), token)
    if g is None:
        return _not_found()
    return _file(request, _index(g.images, idx), "image/png")


@router.get("/gallery/static/{name}")
async def static(name: str) -> Response:
    """The gallery's CSS and JS (a fixed list; nothing else on disk is reachable)."""
    if name not in STATIC:
        return _not_found()
    return FileResponse(HERE / "static" / name, media_type=STATIC[name],
                        headers={**HEADERS, "Cache-Control": "public, max-age=3600"})  # fmt: skip
