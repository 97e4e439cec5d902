"""History search with tag filters: `tag:WORD` terms keep only generations auto-tagged WORD (normalized)."""

from __future__ import annotations

import re

from engine.autotag.normalize import normalize
from engine.store import Store
from engine.store.history import Page, Scope

_TAG = re.compile(r"(?:^|\s)tag:(\"[^\"]+\"|\S+)")
MAX_SCAN = 200  # text matches looked through for tagged ones


def split_tags(query: str) -> tuple[str, list[str]]:
    """(the text without its tag: terms, the normalized tags)."""
    tags = [normalize(m.strip('"')) for m in _TAG.findall(query)]
    return _TAG.sub(" ", query).strip(), [t for t in tags if t]


async def search(store: Store, query: str, scope: Scope, limit: int) -> Page:
    """FTS search (prompts, negatives, presets, styles and auto-tags), filtered by tag: terms."""
    text, tags = split_tags(query)
    if not tags:
        return await store.history.search(query, scope, limit=limit)
    if not text:
        found = await store.tags.with_tag(tags[0], scope, limit=MAX_SCAN)
    else:
        found = (await store.history.search(text, scope, limit=MAX_SCAN)).items
    keep = await store.tags.having([g.id for g in found], tags)
    items = [g for g in found if g.id in keep]
    return Page(items[:limit], None)
