"""The one way a job is submitted, by every front and tool: authorize, validate once, seed, enqueue, wake.

- authorize: the guild's tool policy for the requester's roles (engine/jobs/policy.py), from the requester's
  settings, read once for the whole submission;
- validate: the kind's typed payload (engine/jobs/payloads.py) within the config's limits, and the names it
  uses (preset, style, earlier generations) as this requester sees them;
- seed: a job without a seed gets a random one here, once (a retried job redraws the same images);
- enqueue: the daily quota and per-user limits of the job store; then the runner is woken. When the runner of
  this process has a free slot, the transaction that queues the job also takes it for that runner whenever a fair
  claim would take it at once (nothing else queued), and the runner starts it with what the submission read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Protocol

from pydantic import BaseModel, ValidationError

from engine.config import Settings
from engine.jobs.admission import Admission
from engine.jobs.payloads import PAYLOADS, GeneratePayload, check_limits
from engine.jobs.payloads_video import check_video_limits
from engine.jobs.policy import TOOL_OF_KIND, Requester, check_tool
from engine.jobs.reads import Reads
from engine.jobs.style_codes import expand, shared_preset, shared_style
from engine.runtime.diffusion.errors import InvalidRequest
from engine.runtime.diffusion.request import MAX_SEED, short_errors
from engine.store import Store
from engine.store.cache import OverBudget
from engine.store.history import Scope
from engine.store.jobs import Job, JobStore
from engine.store.library import UnknownEntry

SEEDED = ("generate", "variation", "animate")


def validate_payload(kind: str, payload: Mapping[str, object], settings: Settings) -> BaseModel:
    """The typed payload of a job of `kind`; InvalidRequest naming each bad field or exceeded limit."""
    model = PAYLOADS.get(kind)
    if model is None:
        raise InvalidRequest(f"unknown job kind '{kind}'; known: {', '.join(PAYLOADS)}")
    try:
        typed = model.model_validate(dict(payload))
    except ValidationError as e:
        raise InvalidRequest(f"invalid {kind} request: {short_errors(e)}") from None
    check_limits(typed, settings.generation)
    check_video_limits(typed, settings.video)
    return typed


async def check_names(store: Store, who: Requester, typed: BaseModel) -> dict[str, dict]:
    """InvalidRequest for a preset, style or earlier generation this requester cannot use; the presets read, by
    name (admission reuses them)."""
    read: dict[str, dict] = {}
    try:
        coded = typed if isinstance(typed, GeneratePayload) else None  # a style code's snapshot needs no lookup
        if getattr(typed, "preset", None) and not (coded and shared_preset(coded, typed.preset)):
            read[typed.preset] = await store.presets.resolve("image", typed.preset, who.user_id, who.guild_id)
        if getattr(typed, "style", None) and not (coded and shared_style(coded, typed.style)):
            await store.library.get(typed.style, "style", who.guild_id)
    except UnknownEntry as e:
        raise InvalidRequest(str(e)) from None
    scope = Scope(who.user_id, who.guild_id, include_guild=True)
    for key in ("source_generation_id", "reference_generation_id", "generation_id"):
        gen_id = getattr(typed, key, None)
        if gen_id is not None and await store.history.get(gen_id, scope) is None:
            raise InvalidRequest(f"generation #{gen_id} does not exist or is not visible to you")
    for c in getattr(typed, "controls", None) or []:
        if c.source_generation_id is not None and await store.history.get(c.source_generation_id, scope) is None:
            raise InvalidRequest(f"generation #{c.source_generation_id} does not exist or is not visible to you")
    return read


class Taker(Protocol):
    """The runner of this process, which can take a job in the transaction that queues it (JobRunner)."""

    worker_id: str
    lease_s: float

    def reserve(self, kind: str) -> bool:
        """Hold a free slot for a job of `kind`; False when there is none."""
        ...

    def adopt(self, job: Job | None, reads: Reads | None = None) -> None:
        """Run the job taken for the held slot (None: none was taken; the slot is free again)."""
        ...


class JobSubmitter:
    """Submits jobs for every front; `wake` tells the local runner there is work (a no-op elsewhere)."""

    def __init__(
        self, jobs: JobStore, store: Store, settings: Settings, wake: Callable[[], None],
        admission: Admission | None = None, taker: Taker | None = None,
    ):  # fmt: skip
        self.jobs = jobs
        self.store = store
        self.settings = settings
        self.wake = wake
        self.admission = admission  # GPU-time and VRAM checks (engine.jobs.admission); None: no caps
        self.taker = taker  # the local runner, when jobs may be handed to it as they are queued

    async def submit(
        self, who: Requester, kind: str, payload: Mapping[str, object], *, reply_to: dict | None = None,
        priority: int = 0,
    ) -> int:  # fmt: skip
        """Authorize, validate, seed and enqueue one job; its id. Raises PermissionDenied, InvalidRequest, JobError."""
        stored = await self.store.settings.pair(who.user_id, who.guild_id)
        check_tool(stored.guild, who, TOOL_OF_KIND.get(kind, kind))
        payload = await expand(self.store.style_codes, who, kind, payload)  # a style code, resolved once
        typed = validate_payload(kind, payload, self.settings)
        presets = await check_names(self.store, who, typed)
        data = typed.model_dump(mode="json", exclude_unset=True)  # what was asked (validated), no filler
        if kind == "generate":  # only a seed the requester gave lets the result cache answer
            data["seed_fixed"] = data.get("seed") is not None
        if kind in SEEDED and data.get("seed") is None:
            data["seed"] = random.randint(0, MAX_SEED - 4)  # room for a batch of 4: seed, seed+1, ...
        admission = self.admission
        cost = await admission.check(who, kind, typed, stored, presets) if admission is not None else None
        row = (who.user_id, who.guild_id, who.channel_id, kind, data, priority, reply_to)
        taker = self.taker if self.taker is not None and self.taker.reserve(kind) else None
        taken: Job | None = None
        try:  # the estimate is recorded, and the user's queued GPU-time checked, as the job is inserted
            if taker is None:
                job_id = await self.jobs.enqueue(*row, estimate=cost)
            else:
                job_id, taken = await self.jobs.enqueue_taken(taker.worker_id, taker.lease_s, *row, estimate=cost)
        except OverBudget as e:
            raise InvalidRequest(str(e)) from None
        finally:
            if taker is not None:  # the job runs now with what was read here, or waits for a claim
                taker.adopt(taken, Reads(stored, presets) if taken is not None else None)
        if taker is None:
            self.wake()
        return job_id
