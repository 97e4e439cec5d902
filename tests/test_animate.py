"""/animate (issue 15): 'animate' jobs on a tiny AnimateDiff (tiny SD1.5 + tiny MotionAdapter), posted as MP4."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Images, Paths, Settings
from engine.core import Engine
from engine.jobs.clips import ClipLimits, ClipSpec, encode_clip
from engine.jobs.result import JobResult
from engine.runtime.diffusion import InvalidRequest
from engine.runtime.diffusion.video import VideoRequest
from engine.store.history import Scope
from engine.video import VideoTooLarge, fit_mp4, probe, read_frames
from tests.test_control_jobs import settings, svc  # noqa: F401

A, GUILD = 21, 700
CLIP = {"preset": "demo-video", "frames": 6, "fps": 8, "width": 32, "height": 32, "steps": 2, "seed": 7}


class Steps:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_progress(self, job_id: int, step: int, total: int, preview: object = None) -> None:
        self.seen.append((step, total))


async def animate(svc: Engine, **payload) -> JobResult:  # noqa: F811
    job_id = await svc.submit("animate", {"prompt": "a lighthouse in a storm", **CLIP, **payload}, user_id=A,
                              guild_id=GUILD)  # fmt: skip
    job = await svc.wait(job_id, timeout_s=180)
    assert job.state == "done", job.error
    out = JobResult.of(job)
    assert out is not None
    return out


async def test_text_to_video_is_a_valid_mp4_with_metadata_history_and_progress(svc: Engine) -> None:  # noqa: F811
    steps = Steps()
    svc.runner.subscribe(steps)
    out = await animate(svc)
    mp4, gif = out.images
    assert mp4.endswith(".mp4") and gif.endswith(".gif")
    info = probe(mp4)
    assert (info.frames, info.width, info.height, round(info.fps)) == (6, 32, 32, 8)
    assert info.codec in ("h264", "mpeg4")
    assert info.metadata["title"] == "a lighthouse in a storm"
    meta = info.params()
    assert (
        meta["seed"] == 7
        and meta["frames"] == 6
        and meta["preset"] == "demo-video"
        and meta["mode"] == "txt2vid"
    )
    assert Image.open(gif).n_frames == 6
    from bot.web.thumbs import make_thumbnail

    assert Image.open(make_thumbnail(Path(mp4))).size == (32, 32)  # the gallery shows the clip's first frame
    assert steps.seen and steps.seen[-1][0] == steps.seen[-1][1] == 2  # progress by denoising step
    g = await svc.store.history.get(out.generation_id, Scope(A, GUILD))
    assert g is not None and g.params["fps"] == 8 and g.params["kind"] == "animate" and g.parent_id is None
    found = await svc.store.history.search("lighthouse", Scope(A, GUILD))
    assert out.generation_id in [x.id for x in found.items]
    model = next(s for s in svc.arbiter.snapshot() if s["name"] == "demo-video")
    assert model["kind"] == "video" and model["planned_bytes"] > 0 and model["busy"] == 0


async def test_same_seed_gives_the_same_frames_and_another_seed_others(svc: Engine) -> None:  # noqa: F811
    first = read_frames((await animate(svc)).images[0])
    again = read_frames((await animate(svc)).images[0])
    other = read_frames((await animate(svc, seed=8)).images[0])
    assert len(first) == 6 and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert float(np.std(np.stack(first).astype(np.float32), axis=0).mean()) > 0  # the frames move


async def test_image_to_video_keeps_its_parent_and_starts_from_the_image(svc: Engine, settings) -> None:  # noqa: F811
    still = settings.path("outputs") / "boat.png"
    still.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(still)
    parent = await svc.store.history.add(
        user_id=A, guild_id=GUILD, prompt="a red boat", seed=3, images=[str(still)]
    )
    out = await animate(svc, prompt="the boat sails", source_generation_id=parent, strength=0.5)
    assert out.parent_id == parent
    assert out.params["mode"] == "img2vid" and out.params["strength"] == 0.5
    frames = read_frames(out.images[0])
    assert len(frames) == 6
    Image.new("RGB", (64, 64), (20, 60, 220)).save(blue := still.with_name("blue.png"))
    other = await svc.store.history.add(
        user_id=A, guild_id=GUILD, prompt="a blue boat", seed=3, images=[str(blue)]
    )
    from_blue = read_frames((await animate(svc, prompt="the boat sails", source_generation_id=other,
                                           strength=0.5)).images[0])  # fmt: skip
    assert not np.array_equal(frames[0], from_blue[0])  # same seed and prompt: the image decides the clip
    g = await svc.store.history.get(out.generation_id, Scope(A, GUILD))
    assert g is not None and g.parent_id == parent
    assert probe(out.images[0]).params()["parent_id"] == parent
    junk = settings.path("data_dir") / "uploads" / "notes.png"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"this is not an image")
    job_id = await svc.submit("animate", {"prompt": "x", **CLIP, "source_image": str(junk)}, user_id=A)
    failed = await svc.wait(job_id, timeout_s=60)
    assert failed.state == "failed" and "the image to animate" in (failed.error or "")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"frames": 1}, "frames must be between 2 and 48, got 1"),
        ({"frames": 400}, "frames must be between 2 and 48, got 400"),
        ({"frames": 40}, "renders 1 to 32 frames, not 40"),  # AnimateDiff's motion modules: 32 frames
        ({"fps": 90}, "fps must be between 1 and 24"),
        ({"width": 33}, "video width must be a multiple of 8"),
        ({"preset": "demo"}, "preset 'demo' (sd15) makes images, not videos"),
        ({"preset": "wan-i2v"}, "animates an image: attach one"),
        ({"strength": 0.5}, "strength applies to animating an image"),
        ({"source_generation_id": 999}, "generation #999 does not exist"),
    ],
)
async def test_bad_animate_requests_are_refused_at_submission(svc: Engine, payload, message) -> None:  # noqa: F811
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        await svc.submit("animate", {"prompt": "waves", **CLIP, **payload}, user_id=A, guild_id=GUILD)
    assert (await svc.jobs.counts())["queued"] == 0


async def test_video_presets_are_refused_for_images_and_text_only_ones_for_images(svc: Engine) -> None:  # noqa: F811
    with pytest.raises(InvalidRequest, match="makes videos; use /animate"):
        await svc.submit("generate", {"prompt": "a cat", "preset": "demo-video"}, user_id=A)
    parent = await svc.store.history.add(user_id=A, guild_id=GUILD, prompt="p", seed=1, images=[])
    with pytest.raises(InvalidRequest, match="makes video from text only"):
        await svc.submit("animate", {"prompt": "go", "preset": "wan-t2v", "source_generation_id": parent},
                         user_id=A, guild_id=GUILD)  # fmt: skip


def _noise(n: int, side: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def test_a_video_over_the_upload_limit_is_reencoded_smaller_or_refused(tmp_path: Path) -> None:
    frames = _noise(12, 128)
    full, tries = fit_mp4(frames, 8, 10 * 2**20)
    assert tries == 0
    small, tries = fit_mp4(frames, 8, len(full) // 3)
    assert tries >= 1 and len(small) <= len(full) // 3 and probe(small).frames == 12
    with pytest.raises(VideoTooLarge, match="over the upload limit of 2 KiB"):
        fit_mp4(frames, 8, 2048)
    tight = Settings(paths=Paths(data_dir=str(tmp_path)), images=Images(upload_limit_bytes=2048))
    spec = ClipSpec({}, VideoRequest(prompt="noise", fps=8), {}, ClipLimits.of(tight))
    with pytest.raises(VideoTooLarge):  # the clip is refused before any file is written
        encode_clip(frames, spec)
    clip = encode_clip(frames, replace(spec, limits=replace(spec.limits, upload_bytes=len(full) // 3)))
    assert clip.reencodes >= 1 and len(clip.mp4) <= len(full) // 3
    assert clip.gif is None  # a GIF of noise is over this limit too: only the MP4 is posted
    roomy = encode_clip(frames, replace(spec, limits=replace(spec.limits, upload_bytes=10 * 2**20)))
    assert roomy.reencodes == 0 and roomy.gif is not None and Image.open(io.BytesIO(roomy.gif)).n_frames == 12
    assert probe(roomy.mp4).params()["spoilers"] == [False]


def test_the_wan_path_renders_frames_with_a_tiny_wan_pipeline(tiny_models_dir: Path, tmp_path: Path) -> None:
    from engine.config import Generation, Gpu
    from engine.runtime.diffusion.testmodels_video import ensure_tiny_wan
    from engine.runtime.diffusion.video import VideoModel, VideoRequest

    path = ensure_tiny_wan(tiny_models_dir / "tiny-wan")
    cfg = Settings(
        paths=Paths(data_dir=str(tmp_path)), gpu=Gpu(device="cpu"), generation=Generation(safety="off")
    )
    model = VideoModel({"name": "tiny-wan", "model": str(path), "family": "wan"}, cfg, safety_checker=None)
    assert model.estimate_bytes() > 0 and not model.loaded
    model.load("cpu")
    steps: list[int] = []
    req = VideoRequest(
        prompt="a dog runs", frames=5, width=32, height=32, steps=2, cfg=5.0, seed=1, safety="off"
    )
    frames = model.render(req, progress=lambda step, total, preview: steps.append(step))
    assert len(frames) == 5 and frames[0].size == (32, 32) and steps == [1, 2]
    assert np.array_equal(np.asarray(frames[2]), np.asarray(model.render(req)[2]))  # seeded
    with pytest.raises(InvalidRequest, match="makes video from text only"):
        model.render(
            VideoRequest(prompt="x", frames=5, width=32, height=32, image=Image.new("RGB", (32, 32)))
        )
    model.unload()
    assert not model.loaded
