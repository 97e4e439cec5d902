"""Settings section of the web front (kept out of config.py's length)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.config_base import PosFloat, PosInt, Section


class Web(Section):
    """The web front (`atelier serve`, `atelier run --web`): REST API, webhooks and gallery."""

    host: str = Field("127.0.0.1", description="address the web server listens on")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8080, description="port of the web server; 0 = any free port"
    )
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="the server's address as clients see it, used in links and status URLs",
    )
    cors_origins: tuple[str, ...] = Field(
        (), description="origins allowed to call the API from a browser; empty = CORS off"
    )
    rate_per_minute: PosInt = Field(
        60, description="API requests one key may make per minute (token bucket refill)"
    )
    rate_burst: PosInt = Field(20, description="API requests one key may make in a burst (token bucket size)")
    webhook_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        5, description="most delivery attempts of one webhook (the first included)"
    )
    webhook_backoff_s: PosFloat = Field(
        2.0, description="seconds before the first webhook retry; doubles each retry"
    )
    webhook_timeout_s: PosFloat = Field(10.0, description="seconds one webhook delivery may take")
    preview_interval_s: PosFloat = Field(
        1.5, description="seconds between previews in a job's event stream (step events are not throttled)"
    )
