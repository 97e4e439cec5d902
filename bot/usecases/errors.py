"""The one error a use-case raises for bad user input."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from a user; the message is shown to them as is (ephemeral on Discord)."""
