"""REST API under /v1: submit generations (JSON or multipart), follow and cancel jobs."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from bot.usecases import account, guided
from bot.usecases import jobs as job_cases
from bot.usecases.errors import UserError
from bot.web.auth import AppEngine, Auth, Caller
from bot.web.errors import ApiError
from bot.web.events import job_events
from bot.web.views import base_url, job_links, job_view
from engine.core import Engine
from engine.store.jobs import Job

router = APIRouter(prefix="/v1", tags=["jobs"])
IMAGE_FIELDS = ("image", "control_image", "reference_image")
FORM_OVERHEAD = 1 << 20  # bytes of a multipart body beyond its files


class GenerationBody(BaseModel):
    """A generation request: /imagine's options, optional control/reference settings and a webhook."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(description="what to draw")
    preset: str | None = Field(None, description="image preset name (see /v1/presets)")
    style: str | None = Field(None, description="style label (see /v1/styles)")
    aspect: str | None = Field(None, description="aspect ratio such as 1:1, 16:9, 2:3")
    count: int | None = Field(None, description="images to draw (default: your saved count, else 1)")
    seed: int | None = Field(None, description="seed of the first image (default: random)")
    negative: str | None = Field(None, description="what to avoid")
    control_type: str | None = Field(None, description="control type of control_image (default canny)")
    control_scale: float | None = Field(None, description="how strongly to follow control_image (0–2)")
    reference_mode: str | None = Field(None, description="what to reuse from reference_image")
    reference_scale: float | None = Field(None, description="how strongly to reuse reference_image (0–1.5)")
    image: str | None = Field(None, description="base64 image for img2img (multipart: a file part)")
    control_image: str | None = Field(None, description="base64 control image (multipart: a file part)")
    reference_image: str | None = Field(None, description="base64 reference image (multipart: a file part)")
    callback_url: str | None = Field(None, description="http(s) URL that gets the signed result when it ends")


@dataclass
class BytesUpload:
    """An uploaded image held in memory (a base64 JSON field), shaped like guided.Upload."""

    filename: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    async def read(self) -> bytes:
        return self.data


def _b64(name: str, text: str) -> BytesUpload:
    raw = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return BytesUpload(name, base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise UserError(f"{name}: not valid base64 image data") from None


def check_callback(url: str | None) -> str | None:
    """An http(s) URL with a host (or None); UserError otherwise."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise UserError("callback_url must be an http:// or https:// URL with a host")
    return url


async def _read_body(request: Request, engine: Engine) -> tuple[GenerationBody, dict[str, guided.Upload]]:
    """The request as (options, uploads) from a JSON or multipart body; files stay unread until checked."""
    limit = 3 * engine.settings.images.max_input_bytes + FORM_OVERHEAD
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request is {int(length) / 2**20:.1f} MB; at most {limit / 2**20:.0f} MB")
    ctype = request.headers.get("content-type", "")
    uploads: dict[str, guided.Upload] = {}
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=len(IMAGE_FIELDS), max_fields=32)
        fields: dict[str, object] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in IMAGE_FIELDS:
                    raise UserError(f"unexpected file field '{name}'; files go in: {', '.join(IMAGE_FIELDS)}")
                uploads[name] = value  # type: ignore[assignment]  # filename, size, read()
            elif value != "":
                fields[name] = value
        data: object = fields
    else:
        try:
            data = await request.json()
        except ValueError:
            raise UserError("the body must be JSON (or multipart/form-data)") from None
    try:
        body = GenerationBody.model_validate(data)
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'body'}: {x['msg']}" for x in e.errors()[:5])
        raise ApiError(422, msg) from None
    for name in IMAGE_FIELDS:
        text = getattr(body, name)
        if text is not None:
            uploads[name] = _b64(name, text)
    return body, uploads


async def generation_payload(engine: Engine, who: Caller, body: GenerationBody, uploads: dict) -> dict:
    """The 'generate' payload exactly as /imagine builds it (uploads decoded and stored by guided)."""
    extra = await guided.imagine_fields(engine, guided.Guides(
        control_image=uploads.get("control_image"), control_type=body.control_type,
        control_scale=body.control_scale, reference_image=uploads.get("reference_image"),
        reference_mode=body.reference_mode, reference_scale=body.reference_scale,
    ))  # fmt: skip
    image = uploads.get("image")
    init = await guided.save_image(engine, "image", image) if image is not None else None
    payload = await account.imagine_payload(
        engine, user_id=who.user_id, guild_id=who.guild_id, prompt=body.prompt, preset=body.preset,
        style=body.style, aspect=body.aspect, count=body.count, seed=body.seed, negative=body.negative,
        init_image=init,
    )  # fmt: skip
    return payload | extra


_GENERATION_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": GenerationBody.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                **{k: {"type": "string"} for k in GenerationBody.model_fields if k not in IMAGE_FIELDS},
                **{k: {"type": "string", "format": "binary"} for k in IMAGE_FIELDS},
            }, "required": ["prompt"]}},
        },
        "required": True,
    }
}  # fmt: skip


@router.post("/generations", status_code=202, openapi_extra=_GENERATION_DOC)
async def create_generation(request: Request, who: Auth, engine: AppEngine) -> JSONResponse:
    """Queue a generation (202): its job id, status URL and event stream URL."""
    body, uploads = await _read_body(request, engine)
    callback = check_callback(body.callback_url)
    payload = await generation_payload(engine, who, body, uploads)
    job_id = await engine.submit("generate", payload, user_id=who.user_id, guild_id=who.guild_id,
                                 reply_to={"web_key": who.key.id})  # fmt: skip
    if callback is not None:
        await request.app.state.webhooks.watch(job_id, who.key, callback)
    return JSONResponse({"job_id": job_id, **job_links(base_url(request), job_id)}, status_code=202)


@router.get("/health", tags=["meta"])
async def health() -> dict[str, str]:
    """Liveness of the web front (no key needed)."""
    return {"status": "ok"}


async def own_job(job_id: int, who: Auth, engine: AppEngine) -> Job:
    """FastAPI dependency: the caller's job `job_id`; 404 for a missing one or somebody else's."""
    job = await engine.jobs.get(job_id)
    if job is None or job.user_id != who.user_id:
        raise ApiError(404, f"there is no job #{job_id} of yours")
    return job


OwnJob = Annotated[Job, Depends(own_job)]


@router.get("/jobs/{job_id}")
async def get_job(job: OwnJob, request: Request, engine: AppEngine) -> dict:
    """A job's state, queue position, progress and result."""
    position = await engine.jobs.position(job.id) if job.state == "queued" else None
    return job_view(base_url(request), job, position)


@router.delete("/jobs/{job_id}")
async def cancel_job(job: OwnJob, who: Auth, engine: AppEngine) -> dict:
    """Cancel a queued job now, or stop a running one at its next step."""
    if job.final:
        raise ApiError(409, f"job #{job.id} is already {job.state}")
    _, outcome = await job_cases.cancel(engine, who.user_id, job.id)
    return {"job_id": job.id, "outcome": outcome}


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def job_event_stream(job: OwnJob, request: Request, engine: AppEngine) -> StreamingResponse:
    """Server-sent events: queued (position), progress (step %, throttled previews), then done/failed/cancelled."""
    stream = job_events(engine, request, job.id, base_url(request))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
