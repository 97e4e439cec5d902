"""The search_history tool: full-text search over the requester's own generations (scoped by SQL)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.common import own_scope, summary
from tools.context import ToolContext


async def search_history(
    ctx: ToolContext,
    query: Annotated[str, Field(max_length=200)] = "",
    limit: Annotated[int, Field(ge=1, le=10)] = 5,
) -> dict:
    """Find the user's own earlier images by words in their prompt, style or preset (newest if empty).

    Args:
        query: Words to look for, e.g. "blue robot"; empty for the most recent images.
        limit: How many results to return, 1 to 10.
    """
    page = await ctx.store.history.search(query, own_scope(ctx), limit=limit)
    notes = []
    if not page.items and query.strip():  # no image has every word: any of them, plurals included
        page = await ctx.store.history.search(query, own_scope(ctx), limit=limit, any_term=True)
        if page.items:
            notes.append("no image has all of these words; these have some of them")
    out = {"results": [summary(g) for g in page.items], "count": len(page.items), "more": bool(page.next_cursor)}
    return {**out, "notes": notes} if notes else out
