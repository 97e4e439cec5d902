"""Text helpers shared by the use-cases and the fronts."""

from __future__ import annotations


def clip(text: str, limit: int) -> str:
    """Shorten text to at most `limit` chars with an ellipsis."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
