"""What a tool runs with: the requester's identity (never from the model), attachments and shared services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from engine.config import Settings
from engine.jobs.policy import PermissionDenied, Requester
from engine.jobs.submit import JobSubmitter
from engine.runtime.llm import ChatModel
from engine.store import Store
from engine.store.jobs import Job, JobNotFound, JobStore

__all__ = ["Attachment", "PermissionDenied", "Services", "ToolContext", "ToolError"]

WaitForJob = Callable[[int, float], Awaitable[Job]]


class ToolError(Exception):
    """A failure the user (or the model) can act on; the message is shown as the tool result."""


@dataclass(frozen=True)
class Attachment:
    """An uploaded file: raw bytes and the name the user gave it."""

    name: str
    data: bytes
    content_type: str = ""


async def poll_job(jobs: JobStore, job_id: int, timeout: float, interval: float = 0.25) -> Job:
    """Wait until a job is final by polling the store; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job = await jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"there is no job #{job_id}")
        if job.final:
            return job
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job #{job_id} did not finish within {timeout:.0f} s")
        await asyncio.sleep(interval)


@dataclass
class Services:
    """Shared handles the tools use. `llm` rewrites prompts; `vision` sees images (None = no projector)."""

    store: Store
    jobs: JobStore
    settings: Settings
    llm: ChatModel | None = None
    vision: ChatModel | None = None
    wait_for_job_hook: WaitForJob | None = None
    llm_preset: str = ""
    submitter: JobSubmitter | None = None  # the engine's (a runner-less one when not given: tests, benches)

    def __post_init__(self) -> None:
        if self.submitter is None:
            self.submitter = JobSubmitter(self.jobs, self.store, self.settings, wake=lambda: None)

    async def wait_for_job(self, job_id: int, timeout: float) -> Job:
        """The finished job (done, failed or cancelled); the hook when given, else polling the store."""
        if self.wait_for_job_hook is not None:
            return await self.wait_for_job_hook(job_id, timeout)
        return await poll_job(self.jobs, job_id, timeout)


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class ToolContext:
    """The reserved `ctx` argument: built by the front/agent from the platform event, never from model output."""

    services: Services
    user_id: int
    guild_id: int = 0
    channel_id: int = 0
    roles: tuple[int, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    replied_generation_id: int | None = None
    reply_to: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # per-turn lookups, read once

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, int) or self.user_id <= 0:
            raise ValueError(f"ToolContext.user_id must be a positive int, got {self.user_id!r}")
        object.__setattr__(self, "roles", tuple(self.roles))
        object.__setattr__(self, "attachments", tuple(self.attachments))
        object.__setattr__(self, "reply_to", _frozen(self.reply_to))

    @property
    def settings(self) -> Settings:
        """The application settings."""
        return self.services.settings

    @property
    def requester(self) -> Requester:
        """Who asks, for the engine's job submission and policy checks."""
        return Requester(self.user_id, self.guild_id, self.channel_id, self.roles)

    @property
    def store(self) -> Store:
        """The SQLite store."""
        return self.services.store
