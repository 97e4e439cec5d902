"""Style codes in a job: expanded once, at submission, into the payload's style or preset and its snapshot.

The snapshot travels in the payload (`shared`), so a code works wherever it is visible (its guild, or anywhere
when public) even when the style or preset behind it is another guild's or another user's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.jobs.payloads import GeneratePayload
from engine.jobs.policy import Requester
from engine.runtime.diffusion.errors import InvalidRequest
from engine.store.library import LibraryEntry
from engine.store.style_codes import MalformedCode, StyleCodes, UnknownCode


async def expand(
    codes: StyleCodes, who: Requester, kind: str, payload: Mapping[str, object]
) -> dict[str, Any]:
    """The payload with its style_code resolved for `who`; InvalidRequest for an unusable code or a clash."""
    data = dict(payload)
    if kind != "generate":
        return data
    data.pop("shared", None)  # only ever set here, from the code
    code = data.get("style_code")
    if not code:
        data.pop("style_code", None)
        return data
    try:
        found = await codes.resolve(str(code), who.user_id, who.guild_id)
    except (UnknownCode, MalformedCode) as e:
        raise InvalidRequest(str(e)) from None
    field = found.kind  # "style" or "preset": the payload field the code fills
    given = data.get(field)
    if given is not None and given != found.name:
        raise InvalidRequest(
            f"style code {found.code} sets the {field} to '{found.name}'; leave {field} '{given}' out or drop the code"
        )
    data[field], data["style_code"] = found.name, found.code
    data["shared"] = {"code": found.code, field: found.data}
    return data


def shared_style(p: GeneratePayload, label: str) -> LibraryEntry | None:
    """The code's style when `label` is the one it named, else None (look the label up as usual)."""
    s = p.shared.style if p.shared is not None else None
    if not s or s.get("label") != label:
        return None
    return LibraryEntry(
        id=0, label=label, category="style", content=s.get("content", ""), negative=s.get("negative", ""),
        description=s.get("description", ""), guild_id=0, author_id=0, shipped=False,
    )  # fmt: skip


def shared_preset(p: GeneratePayload, name: str) -> dict[str, Any] | None:
    """The code's image preset when `name` is the one it named, else None (resolve the name as usual)."""
    s = p.shared.preset if p.shared is not None else None
    return dict(s) if s and s.get("name") == name else None
