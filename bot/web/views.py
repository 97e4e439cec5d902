"""How the API shows jobs and generations: JSON-ready dicts with URLs, never file paths."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import Request

from engine.jobs.result import JobResult
from engine.store.history import Generation
from engine.store.jobs import Job


def base_url(request: Request) -> str:
    """The address links start with: web.public_url when configured, else the one the client used."""
    web = request.app.state.settings.web
    if "public_url" in web.model_fields_set:
        return web.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def scrub(value: object) -> object:
    """Parameters without server paths: an absolute file path (an upload, a model folder) keeps its name only."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and not any(c.isspace() for c in value):
        path = PurePath(value)
        return path.name if len(path.parts) > 2 else value
    return value


def image_urls(base: str, generation_id: int, count: int) -> list[str]:
    """The URLs serving a generation's images, by id and index."""
    return [f"{base}/v1/generations/{generation_id}/image/{i}" for i in range(count)]


def job_links(base: str, job_id: int) -> dict[str, str]:
    """Where to follow a job."""
    return {"status_url": f"{base}/v1/jobs/{job_id}", "events_url": f"{base}/v1/jobs/{job_id}/events"}


def progress_of(step: int, total: int) -> dict[str, int]:
    """A step count as the API shows it."""
    return {"step": step, "total": total, "percent": round(100 * step / total) if total else 0}


def result_view(base: str, result: JobResult) -> dict[str, object]:
    """A finished job's result: its generation, seeds and image URLs (no paths)."""
    return {
        "generation_id": result.generation_id,
        "images": image_urls(base, result.generation_id, len(result.images)),
        "seeds": list(result.seeds),
        "spoilers": list(result.spoilers),
        "withheld": result.withheld,
        "withheld_message": result.withheld_message,
        "prompt": result.prompt,
        "negative": result.negative,
        "preset": result.preset,
        "style": result.style,
        "model": scrub(result.model),
        "params": scrub(result.params),
        "parent_id": result.parent_id,
    }


def job_view(base: str, job: Job, position: int | None) -> dict[str, object]:
    """A job's state, queue position, progress and (once done) its result."""
    p = job.progress or {}
    total = int(p.get("total") or 0)
    result = JobResult.of(job)
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "position": position if job.state == "queued" else None,
        "progress": progress_of(int(p.get("step") or 0), total) if total else None,
        "error": job.error,
        "result": result_view(base, result) if result is not None else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        **job_links(base, job.id),
    }


def generation_view(
    base: str, gen: Generation, children: list[Generation] | None = None, *, brief: bool = False
) -> dict[str, object]:
    """One generation: prompt, parameters, seed, image URLs, and its lineage (parent, children)."""
    out: dict[str, object] = {
        "id": gen.id,
        "prompt": gen.prompt,
        "negative": gen.negative,
        "seed": gen.seed,
        "preset": gen.preset,
        "style": gen.style,
        "model": scrub(gen.model),
        "favorite": gen.favorite,
        "created_at": gen.created_at,
        "parent_id": gen.parent_id,
        "images": image_urls(base, gen.id, len(gen.images)),
        "url": f"{base}/v1/generations/{gen.id}",
    }
    if not brief:
        out["params"] = scrub(gen.params)
        out["guild_id"] = gen.guild_id
        out["children"] = [{"id": c.id, "url": f"{base}/v1/generations/{c.id}"} for c in children or []]
    return out
