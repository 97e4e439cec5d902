"""'animate' jobs on the redis backend (real Valkey): rendered on a worker, returned as MP4/GIF bytes, cancellable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from engine.config import Settings
from engine.core import Engine
from engine.jobs.clips import ClipLimits, ClipSpec
from engine.jobs.result import JobResult
from engine.remote.protocol import decode_clip_spec, encode_clip_spec, encode_error, raise_error
from engine.remote.worker import QueueWorker
from engine.runtime.diffusion.video import VideoRequest
from engine.store.history import Scope
from engine.video import VideoTooLarge, probe
from tests.queue_support import http_get
from tests.test_animate import CLIP, Steps
from tests.test_queue_control import settings  # noqa: F401 - shared fixtures
from tests.test_queue_redis import _until, url, valkey  # noqa: F401

A, GUILD = 31, 900
OP_DONE = 'atelier_worker_op_seconds_count{op="animate",outcome="done"} 1.0'


@pytest.fixture
async def svc(settings: Settings, tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    """The bot side (queue.backend "redis"): an Engine whose jobs run on workers."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = await Engine.start(settings, demo=True, poll_s=0.05)
    yield engine
    await engine.stop()


@pytest.fixture
async def worker(settings: Settings):  # noqa: F811
    """Starts an in-process worker (own arbiter; without the ops in `drop`) once it consumes jobs; stops it after."""
    started: list[tuple[QueueWorker, asyncio.Task]] = []
    # the bot and the worker share one event loop here: a model load on busy cores may stall it past 1 s
    patient = settings.model_copy(update={"queue": settings.queue.model_copy(update={"worker_ttl_s": 10.0})})

    async def start(worker_id: str, drop: tuple[str, ...] = ()) -> QueueWorker:
        w = QueueWorker(patient, worker_id=worker_id, demo=True, metrics_port=0)
        for op in drop:
            w.ops.pop(op)
        ready = asyncio.Event()
        started.append(
            (w, asyncio.get_running_loop().create_task(w.run(lambda _w: ready.set(), handle_signals=False)))
        )
        await asyncio.wait_for(ready.wait(), 120)
        return w

    yield start
    for w, task in started:
        w.request_stop()
        await asyncio.wait_for(task, 60)


@pytest.fixture
def steps(svc: Engine) -> Steps:
    """The progress steps the bot's runner relays."""
    seen = Steps()
    svc.runner.subscribe(seen)
    return seen


async def animate(svc: Engine, prompt: str, **payload: object) -> int:
    """Submit an 'animate' job of the tiny clip; its id."""
    return await svc.submit("animate", {"prompt": prompt, **CLIP, **payload}, user_id=A, guild_id=GUILD)


def test_a_clip_spec_and_a_too_large_video_travel_through_the_protocol() -> None:
    still = Image.new("RGB", (16, 16), (200, 30, 30))
    req = VideoRequest(prompt="waves", frames=6, fps=8, width=32, height=32, steps=2, seed=4, image=still)
    spec = ClipSpec({"name": "demo-video"}, req, {"seed": 4}, ClipLimits(1000, 64, 500))
    back = decode_clip_spec(encode_clip_spec(spec))
    assert back.req.image is not None and back.req.image.getpixel((3, 3)) == (200, 30, 30)
    assert back == ClipSpec(spec.preset, VideoRequest(**{**vars(req), "image": back.req.image}), spec.meta,
                            spec.limits)  # fmt: skip
    with pytest.raises(VideoTooLarge, match="over the upload limit"):
        raise_error(encode_error(VideoTooLarge("the video is 3 MiB ..., over the upload limit of 1 MiB")))


async def test_an_animate_job_renders_on_the_worker_and_is_recorded_like_a_local_one(
    svc: Engine, worker, steps: Steps
) -> None:
    await worker("w-video")
    job_id = await animate(svc, "a lighthouse in a storm")
    job = await svc.wait(job_id, timeout_s=180)
    assert job.state == "done", job.error
    out = JobResult.of(job)
    assert out is not None
    mp4, gif = out.images
    assert mp4.endswith(f"{job_id}.mp4") and gif.endswith(f"{job_id}.gif")  # written by the bot
    info = probe(mp4)
    assert (info.frames, info.width, info.height, round(info.fps)) == (6, 32, 32, 8)
    assert info.metadata["title"] == "a lighthouse in a storm" and info.params()["preset"] == "demo-video"
    assert Image.open(gif).n_frames == 6
    assert steps.seen and steps.seen[-1] == (2, 2)  # progress by step, relayed from the worker
    assert out.params["reencodes"] == 0 and out.params["kind"] == "animate"
    # it ran there: the worker's arbiter holds the video model and counted the op; the bot's never saw it
    assert "demo-video" not in [m["name"] for m in svc.arbiter.snapshot()]
    (listed,) = await _until(lambda: _reported(svc, "demo-video"), what="the worker to report the job")
    assert listed["id"] == "w-video" and listed["done"] == 1
    status, text = await http_get(listed["metrics_url"] + "/metrics")
    assert status == 200 and OP_DONE in text
    found = await svc.store.history.search("lighthouse", Scope(A, GUILD))
    assert [g.id for g in found.items] == [out.generation_id]


async def test_cancelling_a_running_animate_job_aborts_it_on_the_worker(
    svc: Engine, settings: Settings, worker, steps: Steps  # noqa: F811
) -> None:  # fmt: skip
    await worker("w-cancel")
    job_id = await animate(svc, "a slow dawn", steps=40)
    await _until(lambda: _async(bool(steps.seen)), timeout=120, what="the first step")
    assert await svc.runner.cancel(job_id, A) == "cancelling"
    job = await svc.wait(job_id, timeout_s=60)
    assert job.state == "cancelled", (job.state, job.error)
    assert max(s for s, _total in steps.seen) < 40
    assert not list(settings.path("outputs").rglob(f"{job_id}.mp4"))
    (listed,) = await svc.workers()
    status, text = await http_get(str(listed["metrics_url"]) + "/metrics")
    assert 'atelier_worker_op_seconds_count{op="animate",outcome="cancelled"} 1.0' in text


async def test_a_worker_without_the_animate_op_fails_the_job_with_a_clear_error(svc: Engine, worker) -> None:
    await worker("w-old", drop=("animate",))
    job = await svc.wait(await animate(svc, "waves"), timeout_s=60)
    assert job.state == "failed"
    assert "a worker without this job's op took it" in (job.error or "") and "'animate'" in job.error


async def _async(value: object) -> object:
    return value


async def _reported(svc: Engine, model: str) -> list[dict[str, object]] | None:
    """The workers once the (one) worker's heartbeat shows it holds `model` and has finished a job."""
    listed = await svc.workers()
    return listed if listed and model in listed[0].get("models", []) and listed[0].get("done") else None
