"""/describe for every front: four prompt suggestions for an image, styled for the user's preset family."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.usecases.errors import UserError
from engine.jobs.policy import PermissionDenied, Requester, authorize
from tools.context import Attachment, Services, ToolContext, ToolError
from tools.describe import suggest

TOOL = "describe"
_LINE = re.compile(r"^\*\*(?P<n>[1-9])\.\*\*\s+(?P<prompt>.+)$")


@dataclass(frozen=True)
class Described:
    """The suggestions, the preset they are styled for, and the generation described (if any)."""

    prompts: list[str]
    preset: str
    family: str
    style: str
    generation_id: int | None = None


async def describe_image(
    tools: Services,
    who: Requester,
    *,
    image: bytes | None = None,
    generation_id: int | None = None,
    preset: str | None = None,
) -> Described:
    """Suggest prompts for an uploaded image, a generation, or the user's latest image; UserError when not."""
    try:
        await authorize(tools.store.settings, who, TOOL)
    except PermissionDenied as e:
        raise UserError(str(e)) from None
    ctx = ToolContext(
        services=tools, user_id=who.user_id, guild_id=who.guild_id, channel_id=who.channel_id, roles=who.roles,
        attachments=(Attachment("image", image),) if image else (),
    )  # fmt: skip
    try:
        out = await suggest(ctx, generation_id, preset)
    except ToolError as e:
        raise UserError(str(e).replace("no image to critique", "no image to describe")) from None
    return Described(out["prompts"], out["preset"], out["family"], out["style"], out["generation_id"])


def describe_text(d: Described) -> str:
    """The reply: a header naming the preset and style, then one numbered suggestion per line."""
    kind = "tag lists" if d.style == "tags" else "sentences"
    head = f"**Prompts for this image** · `{d.preset}` ({d.family}, {kind})"
    lines = [f"**{i}.** {p}" for i, p in enumerate(d.prompts, 1)]
    return "\n".join([head, *lines])


def prompt_from_text(text: str, index: int) -> str:
    """Suggestion `index` (1-based) from a describe_text message; UserError when the message has none."""
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m and int(m["n"]) == index:
            return m["prompt"].strip()
    raise UserError(f"this message has no prompt suggestion {index}")
