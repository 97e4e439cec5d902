"""Web API keys (only a sha256 of each token is stored) and webhook requests with every delivery attempt."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from engine.store.db import Database

TOKEN_PREFIX = "atl_"
SHOWN_CHARS = 12  # of the token, kept in clear so a user can tell keys apart


def token_hash(token: str) -> str:
    """The stored form of a token (API keys here; web logins, sessions and share links too): hex sha256."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: its owner, the shown prefix, the webhook secret, and whether it is revoked."""

    id: int
    user_id: int
    guild_id: int
    name: str
    prefix: str
    webhook_secret: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict) -> ApiKey:
        d = dict(row)
        d.pop("token_hash", None)
        return cls(**d)


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery attempt."""

    job_id: int
    url: str
    attempt: int
    status: int | None
    error: str | None
    ok: bool
    created_at: float


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: the only time the token itself exists outside the caller."""

    key: ApiKey
    token: str


def _url_and_key(row: sqlite3.Row) -> tuple[str, ApiKey]:
    """(url, key) of a webhook row joined with its key's columns."""
    d = dict(row)
    return d.pop("url"), ApiKey.from_row(d)


class ApiKeys:
    """Create, look up, list and revoke API keys; record webhook requests and their delivery attempts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, user_id: int, guild_id: int = 0, name: str = "") -> NewKey:
        """A new key for (user, guild): a 32-byte random token, stored hashed, plus a webhook secret."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        secret = "whsec_" + secrets.token_urlsafe(32)
        now = time.time()
        key_id = await self.db.execute(
            "INSERT INTO api_keys (user_id, guild_id, name, prefix, token_hash, webhook_secret, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user_id, guild_id, name[:100], token[:SHOWN_CHARS], token_hash(token), secret, now),
        )
        return NewKey(await self.get(key_id), token)

    async def get(self, key_id: int) -> ApiKey:
        """A key by id (LookupError when there is none)."""
        row = await self.db.fetchone("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        if row is None:
            raise LookupError(f"no API key #{key_id}")
        return ApiKey.from_row(row)

    async def find(self, token: str) -> ApiKey | None:
        """The key a token belongs to (revoked ones included), or None."""
        row = await self.db.fetchone("SELECT * FROM api_keys WHERE token_hash = ?", (token_hash(token),))
        return ApiKey.from_row(row) if row is not None else None

    async def list(self, user_id: int, guild_id: int | None = None) -> list[ApiKey]:
        """A user's keys (of one guild when given), oldest first."""
        if guild_id is None:
            rows = await self.db.fetchall("SELECT * FROM api_keys WHERE user_id = ? ORDER BY id", (user_id,))
        else:
            rows = await self.db.fetchall(
                "SELECT * FROM api_keys WHERE user_id = ? AND guild_id = ? ORDER BY id", (user_id, guild_id)
            )
        return [ApiKey.from_row(r) for r in rows]

    async def revoke(self, key_id: int, user_id: int) -> bool:
        """Revoke the owner's key; False when it is not theirs or already revoked."""
        n = await self.db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
            (time.time(), key_id, user_id),
        )
        return n == 1

    async def touch(self, key_id: int) -> None:
        """Record that the key was just used."""
        await self.db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (time.time(), key_id))

    # -- webhooks ---------------------------------------------------------------------------

    async def add_webhook(self, job_id: int, key_id: int, url: str) -> None:
        """Ask for a POST to `url` (signed with the key's secret) when job `job_id` ends."""
        await self.db.execute(
            "INSERT OR REPLACE INTO webhooks (job_id, key_id, url, created_at) VALUES (?, ?, ?, ?)",
            (job_id, key_id, url, time.time()),
        )

    async def webhook(self, job_id: int) -> tuple[str, ApiKey] | None:
        """(url, key) of a job's undelivered webhook, or None."""
        row = await self.db.fetchone(
            "SELECT w.url, k.* FROM webhooks w JOIN api_keys k ON k.id = w.key_id"
            " WHERE w.job_id = ? AND w.delivered_at IS NULL",
            (job_id,),
        )
        return _url_and_key(row) if row is not None else None

    async def undelivered(self, limit: int = 100) -> list[int]:
        """Job ids whose webhook is not settled yet (oldest first)."""
        rows = await self.db.fetchall(
            "SELECT job_id FROM webhooks WHERE delivered_at IS NULL ORDER BY job_id LIMIT ?", (limit,)
        )
        return [int(r[0]) for r in rows]

    async def record_delivery(
        self,
        job_id: int,
        key_id: int,
        url: str,
        attempt: int,
        status: int | None,
        error: str | None,
        ok: bool,
    ) -> None:
        """Store one delivery attempt."""
        await self.db.execute(
            "INSERT INTO webhook_deliveries (key_id, job_id, url, attempt, status, error, ok, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, job_id, url, attempt, status, (error or "")[:500] or None, int(ok), time.time()),
        )

    async def settle_webhook(self, job_id: int) -> None:
        """Mark a job's webhook as finished with (delivered, or given up after its last attempt)."""
        await self.db.execute("UPDATE webhooks SET delivered_at = ? WHERE job_id = ?", (time.time(), job_id))

    async def deliveries(self, job_id: int) -> list[Delivery]:
        """Every delivery attempt of a job's webhook, in order."""
        rows = await self.db.fetchall(
            "SELECT job_id, url, attempt, status, error, ok, created_at FROM webhook_deliveries"
            " WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [Delivery(**{**dict(r), "ok": bool(r["ok"])}) for r in rows]
