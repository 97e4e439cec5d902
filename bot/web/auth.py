"""Bearer-key authentication and per-key rate limits: every API request acts as the key's owner."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from bot.usecases.apikeys import key_of_token
from bot.web.errors import ApiError
from engine.config import Web
from engine.core import Engine
from engine.jobs.policy import Requester, authorize
from engine.store.apikeys import ApiKey

API_TOOL = "api"  # guild policy entry: {"tools": {"api": {"enabled": false}}} turns the web API off there
TOUCH_EVERY_S = 60.0  # how often a key's last_used_at is written


@dataclass
class Bucket:
    """A token bucket: `burst` requests at once, refilled at `rate` per second."""

    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, now: float) -> float:
        """0 when a request may pass (a token is spent), else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class RateLimiter:
    """One bucket per API key, sized by settings.web."""

    web: Web
    buckets: dict[int, Bucket] = field(default_factory=dict)
    touched: dict[int, float] = field(default_factory=dict)

    def check(self, key_id: int, now: float | None = None) -> None:
        """ApiError 429 (with Retry-After) when the key has spent its bucket."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key_id)
        if bucket is None:
            burst = float(self.web.rate_burst)
            bucket = self.buckets[key_id] = Bucket(self.web.rate_per_minute / 60.0, burst, burst, now)
        wait = bucket.take(now)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise ApiError(429, f"rate limit: {self.web.rate_per_minute} requests per minute per key; "
                           f"retry in {retry} s", "rate_limited", {"Retry-After": str(retry)})  # fmt: skip


@dataclass(frozen=True)
class Caller:
    """Who an API request acts as: the key and its owner."""

    key: ApiKey

    @property
    def user_id(self) -> int:
        return self.key.user_id

    @property
    def guild_id(self) -> int:
        return self.key.guild_id

    @property
    def requester(self) -> Requester:
        return Requester(self.key.user_id, self.key.guild_id)


def bearer(request: Request) -> str:
    """The token of an `Authorization: Bearer <token>` header; ApiError 401 when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`", "unauthorized",
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
    return token.strip()


def engine_of(request: Request) -> Engine:
    """FastAPI dependency: the app's engine."""
    return request.app.state.engine


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the key's owner, after 401 (unknown key), 403 (revoked, guild policy), 429 checks."""
    engine = engine_of(request)
    key = await key_of_token(engine.store.apikeys, bearer(request))
    if key is None:
        raise ApiError(401, "unknown API key", "unauthorized", {"WWW-Authenticate": "Bearer"})
    if key.revoked:
        raise ApiError(403, f"API key #{key.id} was revoked", "key_revoked")
    await authorize(engine.store.settings, Requester(key.user_id, key.guild_id), API_TOOL)  # PermissionDenied
    limiter: RateLimiter = request.app.state.limiter
    limiter.check(key.id)
    now = time.monotonic()
    if now - limiter.touched.get(key.id, float("-inf")) >= TOUCH_EVERY_S:
        limiter.touched[key.id] = now
        await engine.store.apikeys.touch(key.id)
    return Caller(key)


Auth = Annotated[Caller, Depends(caller)]  # an endpoint parameter: who the request acts as
AppEngine = Annotated[Engine, Depends(engine_of)]
