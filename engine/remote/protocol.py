"""What travels through Redis between the bot and workers: key names, requests, images and errors.

Results travel as PNG bytes (a clip: MP4 and GIF bytes) inside arq's result (Redis), so workers need no
shared filesystem; the bot writes them to its own outputs directory. Errors travel as {"type", "message", ...}
and are re-raised on the bot as the same engine exception, so a SafetyBlocked on a worker is a SafetyBlocked
to the handler.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Any

from engine.jobs.clips import ClipLimits, ClipSpec
from engine.jobs.runner import JobFailed
from engine.runtime.diffusion.errors import (
    BlankImage,
    Cancelled,
    GenerationFailed,
    ImageWithheld,
    InvalidRequest,
    ModelNotAvailable,
    SafetyBlocked,
)
from engine.runtime.diffusion.video import VideoRequest
from engine.video import VideoTooLarge

QUEUE = "atelier:queue"  # the arq queue (a sorted set)
WORKERS = "atelier:workers"  # set of worker ids ever registered and not yet reaped
PROGRESS = "atelier:progress"  # pub/sub: {"id", "step", "total", "preview"}
DONE = "atelier:done"  # pub/sub: an arq job id whose result is ready
DEAD = "atelier:dead"  # list: dead-lettered jobs (JSON), newest first
ROUTED = "atelier:routed"  # set: ids of workers that have (or had) jobs routed to their own queue
ARQ_IN_PROGRESS = "arq:in-progress:"  # arq's own key prefix (arq.constants.in_progress_key_prefix)
_ERRORS: dict[str, type[Exception]] = {
    c.__name__: c for c in (Cancelled, GenerationFailed, InvalidRequest, ModelNotAvailable, VideoTooLarge)
}
_WITHHELD: dict[str, type[ImageWithheld]] = {
    c.__name__: c for c in (ImageWithheld, SafetyBlocked, BlankImage)
}


class RemoteJobFailed(JobFailed):
    """A worker reported a permanent failure (its message is shown to the user)."""


class RemoteCrash(Exception):
    """A worker hit an unexpected error; the job may be retried."""


def redis_settings(url: str) -> Any:
    """arq's RedisSettings for queue.redis_url, failing fast (2 tries) when Redis is down."""
    import dataclasses

    from arq.connections import RedisSettings

    return dataclasses.replace(RedisSettings.from_dsn(url), conn_retries=2, conn_timeout=2)


def arq_id(job_id: int) -> str:
    """The arq job id of an Atelier job (one arq job per Atelier job, so a restarted bot re-attaches)."""
    return f"atelier-job:{job_id}"


def worker_key(worker_id: str) -> str:
    """The heartbeat key (JSON info, expires after queue.worker_ttl_s)."""
    return f"atelier:worker:{worker_id}"


def worker_queue(worker_id: str) -> str:
    """A worker's own arq queue: jobs routed to it because it holds their preset (routing.py)."""
    return f"{QUEUE}:{worker_id}"


def worker_jobs_key(worker_id: str) -> str:
    """The set of arq job ids a worker is running."""
    return f"atelier:worker:{worker_id}:jobs"


# ----- images -----


def png(image: Any) -> bytes:
    """Lossless PNG bytes of a PIL image (zlib level 1: transport only, the bot writes the saved file)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def from_png(data: bytes) -> Any:
    """A PIL image from PNG bytes (fully loaded)."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def encode_images(images: list[Any]) -> list[dict[str, Any]]:
    """[{"png", "seed", "spoiler"}] keeping the engine's per-image info."""
    return [
        {
            "png": png(im),
            "seed": im.info.get("atelier_seed"),
            "spoiler": bool(im.info.get("atelier_spoiler", False)),
        }
        for im in images
    ]


def decode_images(items: list[dict[str, Any]]) -> list[Any]:
    """The inverse of encode_images."""
    out = []
    for it in items:
        im = from_png(it["png"])
        if it.get("seed") is not None:
            im.info["atelier_seed"] = it["seed"]
        im.info["atelier_spoiler"] = bool(it.get("spoiler"))
        out.append(im)
    return out


def b64_png(image: Any | None) -> str | None:
    """A preview as base64 PNG for the JSON progress channel."""
    return None if image is None else base64.b64encode(png(image)).decode()


def from_b64_png(data: str | None) -> Any | None:
    """The inverse of b64_png."""
    return None if not data else from_png(base64.b64decode(data))


# ----- requests -----


def encode_request(req: Any) -> dict[str, Any]:
    """A GenerationRequest as plain data (source and mask images as PNG bytes)."""
    data = req.model_dump(exclude={"init_image", "mask_image", "controls", "reference"})
    data["loras"] = [[r, s] for r, s in req.loras]
    for key in ("init_image", "mask_image"):
        im = getattr(req, key)
        data[key] = None if im is None else png(im)
    data["controls"] = [{**c.params(), "image": png(c.image)} for c in req.controls]
    ref = req.reference
    data["reference"] = None if ref is None else {**ref.params(), "image": png(ref.image)}
    if ref is not None and ref.others:
        data["reference"]["others"] = [png(im) for im in ref.others]
    return data


def decode_request(data: dict[str, Any]) -> Any:
    """The inverse of encode_request (validated again; InvalidRequest on bad data)."""
    from pydantic import ValidationError

    from engine.runtime.diffusion.request import GenerationRequest

    fields = dict(data)
    for key in ("init_image", "mask_image"):
        if fields.get(key) is not None:
            fields[key] = from_png(fields[key])
    fields["loras"] = [tuple(x) for x in fields.get("loras") or []]
    fields["controls"] = [{**c, "image": from_png(c["image"])} for c in fields.get("controls") or []]
    if fields.get("reference"):
        fields["reference"] = {**fields["reference"], "image": from_png(fields["reference"]["image"])}
        fields["reference"]["others"] = [from_png(b) for b in fields["reference"].get("others", [])]
    try:
        return GenerationRequest(**fields)
    except ValidationError as e:
        raise InvalidRequest(f"a worker got a bad request: {e.error_count()} problem(s): {e}") from None


def encode_clip_spec(spec: ClipSpec) -> dict[str, Any]:
    """An engine.jobs.clips.ClipSpec as plain data (the image to animate as PNG bytes)."""
    req = {f.name: getattr(spec.req, f.name) for f in dataclasses.fields(spec.req) if f.name != "image"}
    req["image"] = None if spec.req.image is None else png(spec.req.image)
    return {"preset": spec.preset, "request": req, "meta": spec.meta, "limits": dataclasses.asdict(spec.limits)}


def decode_clip_spec(data: dict[str, Any]) -> ClipSpec:
    """The inverse of encode_clip_spec (InvalidRequest on bad data)."""
    fields = dict(data["request"])
    if fields.get("image") is not None:
        fields["image"] = from_png(fields["image"])
    try:
        return ClipSpec(data["preset"], VideoRequest(**fields), dict(data["meta"]), ClipLimits(**data["limits"]))
    except TypeError as e:
        raise InvalidRequest(f"a worker got a bad clip request: {e}") from None


# ----- errors -----


def encode_error(exc: BaseException) -> dict[str, Any]:
    """A worker-side exception as data; unknown types become "crash" (retryable)."""
    name = type(exc).__name__
    out: dict[str, Any] = {"type": name, "message": str(exc) or name}
    if isinstance(exc, ImageWithheld):
        out["delivered"] = encode_images(exc.delivered)
        out["withheld"] = list(exc.withheld)
    elif name not in _ERRORS and name != "JobFailed":
        out["type"] = "crash"
        out["message"] = f"{name}: {exc}"
    return out


def raise_error(err: dict[str, Any]) -> None:
    """Raise the engine exception an encoded error stands for."""
    kind, message = err.get("type"), str(err.get("message") or "the worker failed")
    if kind in _WITHHELD:
        raise _WITHHELD[kind](
            message, decode_images(err.get("delivered") or []), list(err.get("withheld") or [])
        )
    if kind in _ERRORS:
        raise _ERRORS[kind](message)
    if kind == "JobFailed":
        raise RemoteJobFailed(message)
    raise RemoteCrash(message)
