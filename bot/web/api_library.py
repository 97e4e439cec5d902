"""REST API under /v1: history search, generations (params, images by id, lineage), favorites, presets, styles,
and one agent turn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.usecases.agent import TurnSpec, run_agent
from bot.usecases.library import defaults
from bot.web.auth import AppEngine, Auth, Caller
from bot.web.errors import ApiError
from bot.web.views import base_url, generation_view, job_links
from engine.core import Engine
from engine.store.history import Generation, HistoryQueryError, Scope

router = APIRouter(prefix="/v1", tags=["library"])
MAX_PAGE = 100


def _scope(who: Caller, server_wide: bool = False) -> Scope:
    return Scope(who.user_id, who.guild_id, include_guild=server_wide and bool(who.guild_id))


@router.get("/history")
async def history(
    request: Request, who: Auth, engine: AppEngine, q: str = "", cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20, server_wide: bool = False,
) -> dict:  # fmt: skip
    """Your generations matching `q` (full-text, every word quoted; blank = newest first), keyset-paginated."""
    try:
        page = await engine.store.history.search(q, _scope(who, server_wide), limit=limit, cursor=cursor)
    except HistoryQueryError as e:
        raise ApiError(400, str(e), "bad_query") from None
    base = base_url(request)
    return {
        "items": [generation_view(base, g, brief=True) for g in page.items],
        "next_cursor": page.next_cursor,
    }


async def visible(engine: Engine, who: Caller, gen_id: int) -> Generation:
    """A generation the caller may see (theirs, or their guild's); 404 otherwise."""
    gen = await engine.store.history.get(gen_id, _scope(who, server_wide=True))
    if gen is None:
        raise ApiError(404, f"there is no generation #{gen_id} you can see")
    return gen


async def _visible_gen(gen_id: int, who: Auth, engine: AppEngine) -> Generation:
    """FastAPI dependency: the path's generation, if the caller may see it."""
    return await visible(engine, who, gen_id)


VisibleGen = Annotated[Generation, Depends(_visible_gen)]


@router.get("/generations/{gen_id}")
async def generation(gen: VisibleGen, request: Request, who: Auth, engine: AppEngine) -> dict:
    """One generation: prompt, parameters, seed, image URLs, parent and children."""
    children = await engine.store.web.children(gen.id, _scope(who, server_wide=True))
    return generation_view(base_url(request), gen, children)


@router.get("/generations/{gen_id}/image/{index}", response_class=FileResponse)
async def generation_image(gen: VisibleGen, index: int, engine: AppEngine) -> FileResponse:
    """Image `index` (0-based) of a generation, found by id (never by a path from the request)."""
    if not 0 <= index < len(gen.images):
        raise ApiError(404, f"generation #{gen.id} has {len(gen.images)} image(s); there is no image {index}")
    path = Path(gen.images[index]).resolve()
    root = engine.settings.path("outputs").resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ApiError(404, f"the file of image {index} of generation #{gen.id} is gone")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


async def _favorite(engine: Engine, who: Caller, gen_id: int, on: bool) -> dict:
    if not await engine.store.history.set_favorite(gen_id, who.user_id, on):
        raise ApiError(404, f"generation #{gen_id} is not one of yours")
    return {"id": gen_id, "favorite": on}


@router.post("/generations/{gen_id}/favorite")
async def favorite(gen_id: int, who: Auth, engine: AppEngine) -> dict:
    """Mark one of your generations as a favorite."""
    return await _favorite(engine, who, gen_id, True)


@router.delete("/generations/{gen_id}/favorite")
async def unfavorite(gen_id: int, who: Auth, engine: AppEngine) -> dict:
    """Unmark a favorite."""
    return await _favorite(engine, who, gen_id, False)


@router.get("/presets")
async def presets(who: Auth, engine: AppEngine) -> dict:
    """The image presets you can use (yours, your guild's, the shipped ones) and your default."""
    items = await engine.store.presets.list("image", who.user_id, who.guild_id)
    current = (await defaults(engine, who.user_id, who.guild_id)).get("preset") or engine.default_image_preset
    return {"default": current, "items": items}


@router.get("/styles")
async def styles(who: Auth, engine: AppEngine) -> dict:
    """The styles visible to you (shipped and your guild's)."""
    items = await engine.store.library.list("style", who.guild_id)
    return {
        "items": [
            {"label": e.label, "description": e.description, "template": e.content, "negative": e.negative,
             "shipped": e.shipped, "guild": bool(e.guild_id)}
            for e in items
        ]
    }  # fmt: skip


class AgentBody(BaseModel):
    """One message to the agent, with the earlier conversation if any (oldest first)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000, description="the message")
    conversation: list[dict[str, str]] = Field([], max_length=50, description='[{"role", "content"}] earlier')
    reply_to_generation_id: int | None = Field(None, description="a generation the message is about")


@router.post("/agent")
async def agent_turn(body: AgentBody, request: Request, who: Auth, engine: AppEngine) -> dict:
    """One agent turn (the same agent as `atelier chat --json`): its reply, tool calls and the jobs it queued."""
    agent = request.app.state.agent
    if agent is None:
        raise ApiError(503, "this server runs without the agent", "unavailable")
    if body.reply_to_generation_id is not None:
        await visible(engine, who, body.reply_to_generation_id)
    convo = [m for m in body.conversation if m.get("role") in ("user", "assistant") and "content" in m]
    spec = TurnSpec(text=body.text, user_id=who.user_id, guild_id=who.guild_id, conversation=convo,
                    replied_generation_id=body.reply_to_generation_id, reply_to={"web_key": who.key.id})  # fmt: skip
    out = await run_agent(agent, spec)
    base = base_url(request)
    return {
        "reply": out.text,
        "tool_calls": [
            {"name": c.name, "args": c.args, "result": c.result, "executed": c.executed}
            for c in out.tool_calls
        ],  # fmt: skip
        "jobs": [{"job_id": j, **job_links(base, j)} for j in out.job_ids],
        "follow_ups": out.followups,
    }
