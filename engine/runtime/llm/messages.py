"""Check chat messages before llama.cpp sees them; images go through engine.images and come out re-encoded."""

from __future__ import annotations

from typing import Any

from engine.images import BadImage, decode_data_uri, to_data_uri
from engine.runtime.llm.types import InvalidMessages, Message, NoVisionProjector

ROLES = ("system", "user", "assistant", "tool")


def _image_url(part: dict, where: str) -> str:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise InvalidMessages(f"{where}: image_url part needs a string url")
    if not url.startswith("data:"):
        head = url[:60] + ("..." if len(url) > 60 else "")
        raise InvalidMessages(f"{where}: only data: URIs are accepted for images, got {head!r}")
    return url


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
        raise InvalidMessages(f"{where}: content parts must be {{'type': 'text'|'image_url', ...}}")
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise InvalidMessages(f"{where}: text part needs a string 'text'")
    if part["type"] == "image_url":
        _image_url(part, where)


def check_messages(messages: list[Message]) -> int:
    """Validate shape and image URLs (data: only); return how many images there are."""
    if not isinstance(messages, list) or not messages:
        raise InvalidMessages("messages must be a non-empty list")
    images = 0
    for i, msg in enumerate(messages):
        where = f"message {i}"
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise InvalidMessages(f"{where}: needs a role in {ROLES}")
        content = msg.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                _check_part(part, f"{where} part {j}")
                images += part["type"] == "image_url"
        elif not isinstance(content, str):
            raise InvalidMessages(f"{where}: content must be a string or a list of parts")
        if (
            msg["role"] != "user"
            and isinstance(content, list)
            and any(p["type"] == "image_url" for p in content)
        ):
            raise InvalidMessages(f"{where}: images are only accepted in user messages")
    return images


def prepare_images(messages: list[Message], *, limits: dict, max_side: int) -> list[Message]:
    """Copy the messages: images safely decoded and re-encoded as fresh PNG data URIs, text-only parts joined."""
    out: list[Message] = []
    for i, msg in enumerate(messages):
        content = msg.get("content")
        if not isinstance(content, list):
            out.append(dict(msg))
            continue
        if all(p["type"] == "text" for p in content):  # chat templates expect plain strings
            out.append({**msg, "content": "\n".join(p["text"] for p in content)})
            continue
        parts = []
        for j, part in enumerate(content):
            if part["type"] != "image_url":
                parts.append(dict(part))
                continue
            try:
                img = decode_data_uri(_image_url(part, f"message {i} part {j}"), **limits)
            except BadImage as e:
                raise InvalidMessages(f"message {i} part {j}: {e}") from None
            parts.append({"type": "image_url", "image_url": {"url": to_data_uri(img, max_side=max_side)}})
        out.append({**msg, "content": parts})
    return out


def require_vision(n_images: int, has_projector: bool, preset: str) -> None:
    """Refuse images for a preset without an mmproj."""
    if n_images and not has_projector:
        raise NoVisionProjector(f"this LLM preset has no vision projector (preset {preset!r} has no mmproj)")
