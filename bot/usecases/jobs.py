"""Jobs as every front sees them: a finished job's output, follow-ups (reroll/V/U), cancel, the queue."""

from __future__ import annotations

from bot.usecases.errors import UserError
from bot.usecases.text import clip
from engine.core import Engine
from engine.jobs.result import JobResult
from engine.store.jobs import Job, JobError

FOLLOWUP_KINDS = ("generate", "variation", "upscale")


def job_output(job: Job) -> JobResult:
    """The result of a finished job; UserError while it is not done."""
    result = JobResult.of(job)
    if result is None:
        raise UserError(f"job #{job.id} is {job.state}; it has no images")
    return result


def job_prompt(job: Job) -> str:
    """The prompt shown for a job (its own, or the one of the image it derives from)."""
    result = JobResult.of(job)
    return str(job.payload.get("prompt") or (result.prompt if result is not None else ""))


def followup_payload(kind: str, source: Job, index: int | None) -> dict:
    """Payload for reroll ('generate'), V<i> ('variation') or U<i> ('upscale') from a finished job."""
    if kind not in FOLLOWUP_KINDS:
        raise UserError(f"unknown follow-up {kind!r}")
    if source.state != "done":
        raise UserError(f"job #{source.id} is {source.state}; only finished images can be reused")
    if kind == "generate":
        if source.kind != "generate":
            raise UserError(f"job #{source.id} is a {source.kind}; only generations can be rerolled")
        return {k: v for k, v in source.payload.items() if k != "seed"}
    out = job_output(source)
    if index is None or not 0 <= index < len(out.images):
        raise UserError(f"job #{source.id} has no image {index + 1 if index is not None else '?'}")
    return {"generation_id": out.generation_id, "index": index}


async def cancel(engine: Engine, user_id: int, job_id: int | None) -> tuple[int, str]:
    """Cancel a job (default: the user's newest pending one); (job id, 'cancelled' or 'cancelling')."""
    if job_id is None:
        mine = await engine.jobs.user_jobs(user_id)
        if not mine:
            raise UserError("you have no queued or running jobs to cancel")
        job_id = mine[-1].id
    try:
        return job_id, await engine.runner.cancel(job_id, user_id)
    except JobError as e:
        raise UserError(str(e)) from None


async def cancel_text(engine: Engine, user_id: int, job_id: int | None) -> str:
    """cancel() as a reply line."""
    job_id, outcome = await cancel(engine, user_id, job_id)
    return f"Job #{job_id} {'cancelled' if outcome == 'cancelled' else 'is stopping'}."


def _worker_label(info: dict) -> str:
    """A worker in /queue: its id, device and the presets it holds ("box on cuda:1 with sdxl")."""
    label = str(info.get("id", "?")) + (f" on {info['device']}" if info.get("device") else "")
    return label + (f" with {', '.join(info['models'])}" if info.get("models") else "")


async def queue_text(engine: Engine, user_id: int) -> str:
    """The user's queued and running jobs with their queue positions."""
    jobs = engine.jobs
    mine = await jobs.user_jobs(user_id)
    counts = await jobs.counts()
    head = f"Queue: {counts['queued']} waiting, {counts['running']} running."
    workers = await engine.workers()
    if workers:
        names = ", ".join(_worker_label(w) for w in workers)
        head += f"\nWorkers: {len(workers)} online ({clip(names, 200)})."
    lines = []
    for j in mine:
        if j.state == "running":
            p = j.progress or {}
            step = f" step {p.get('step')}/{p.get('total')}" if p.get("total") else ""
            lines.append(f"• #{j.id} {j.kind} — running{step} — {clip(job_prompt(j), 80)}")
        else:
            pos = await jobs.position(j.id)
            lines.append(f"• #{j.id} {j.kind} — position {pos} — {clip(job_prompt(j), 80)}")
    return head + ("\n" + "\n".join(lines) if lines else "\nYou have no pending jobs.")
