"""Images at the door: every upload is decoded and checked once, off the event loop, before the agent sees it.

Every front calls check_uploads on what the user sent (Discord attachments and the images of the message
replied to, the terminal's /attach, the web API's uploads). A bad file gets a message naming the file, what
is wrong and the limits; it never reaches the agent and no job is queued for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from engine.config import Images
from engine.images import BadImage, decode_image, image_limits
from tools.context import Attachment, ToolError

NAME_CHARS = 64


class RejectedUpload(ToolError):
    """An uploaded file that is not a usable image; the message is for the user."""


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}".removesuffix(".0")


def limits_text(images: Images) -> str:
    """What uploads may be, in words: "PNG/JPEG/WEBP/GIF images up to 20 MB and 16.8 megapixels"."""
    mp = f"{images.max_input_pixels / 1e6:.1f}".removesuffix(".0")
    return f"{'/'.join(images.formats)} images up to {_mb(images.max_input_bytes)} MB and {mp} megapixels"


def too_large(images: Images, name: str, size: int) -> RejectedUpload:
    """The rejection for a file that is over the byte limit before it is even downloaded."""
    return RejectedUpload(f"{name[:NAME_CHARS]} is {_mb(size)} MB: too large. I take {limits_text(images)}.")


def check_upload(images: Images, att: Attachment) -> Attachment:
    """The attachment when it decodes within the limits; RejectedUpload saying why otherwise (blocking)."""
    if len(att.data) > images.max_input_bytes:
        raise too_large(images, att.name, len(att.data))
    try:
        decode_image(att.data, **image_limits(images))
    except BadImage as e:
        raise RejectedUpload(f"{att.name[:NAME_CHARS]}: {e}. I take {limits_text(images)}.") from None
    return att


def _check_all(images: Images, files: Sequence[Attachment]) -> list[Attachment]:
    return [check_upload(images, f) for f in files]


async def check_uploads(images: Images, files: Sequence[Attachment]) -> list[Attachment]:
    """check_upload for each file, in a worker thread; the first bad file raises RejectedUpload."""
    if not files:
        return []
    return await asyncio.to_thread(_check_all, images, files)
