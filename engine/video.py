"""MP4 and GIF files of generated frames (PyAV): H.264 when available, metadata in the container, size limits.

`fit_mp4` encodes frames and re-encodes them at a lower bitrate, then a smaller size, until the file fits an
upload limit; `VideoTooLarge` says by how much it still does not. Blocking: run these in a worker thread.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

H264_ENCODERS = ("libx264", "libopenh264")
FALLBACK_ENCODER = "mpeg4"
SCALES = (1.0, 0.75, 0.5, 0.35)  # sizes tried, in order, once lowering the bitrate alone is not enough
MIN_BITRATE = 64_000
META_KEY = "comment"  # the container tag holding the JSON of the prompt and parameters


class VideoTooLarge(ValueError):
    """A video that stays over the upload limit after every re-encoding; the message gives both sizes."""


class BadVideo(ValueError):
    """Bytes that are not a readable video."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: frame count, rate, size, codec and its container metadata."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str
    metadata: dict[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, object]:
        """The JSON stored in the container's comment tag ({} when absent or not JSON)."""
        try:
            data = json.loads(self.metadata.get(META_KEY, "{}"))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


@functools.cache
def mp4_encoder() -> str:
    """The best MP4 video encoder this PyAV build has: H.264 (libx264) if present, else MPEG-4 Part 2."""
    import av

    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except (ValueError, av.error.FFmpegError):  # type: ignore[attr-defined]
            continue
        return name
    return FALLBACK_ENCODER


def metadata_tags(prompt: str, params: Mapping[str, object]) -> dict[str, str]:
    """Container tags: the prompt as the title, the parameters as JSON in the comment."""
    return {"title": prompt[:500], META_KEY: json.dumps(dict(params), sort_keys=True, default=str)}


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


def encode_mp4(
    frames: list[Image.Image], fps: int, *, tags: Mapping[str, str] | None = None, bitrate: int | None = None,
    scale: float = 1.0,
) -> bytes:  # fmt: skip
    """The frames as one MP4 (yuv420p; quality-based unless `bitrate` in bits/s is given)."""
    import av

    if not frames:
        raise ValueError("a video needs at least one frame")
    w, h = _even(frames[0].width * scale), _even(frames[0].height * scale)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        out.metadata.update(dict(tags or {}))
        codec = mp4_encoder()
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if bitrate is not None:
            stream.bit_rate = max(MIN_BITRATE, int(bitrate))
        elif codec == "libx264":
            stream.options = {"crf": "20"}
        else:
            stream.bit_rate = max(MIN_BITRATE, int(w * h * fps * 0.25))
        if codec == "libx264":
            stream.options = {**stream.options, "preset": "medium", "threads": "1"}  # same bytes every run
        for im in frames:
            im = im.convert("RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.LANCZOS)
            frame = av.VideoFrame.from_image(im).reformat(format="yuv420p")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _bitrate_for(limit: int, frames: int, fps: int) -> int:
    seconds = max(frames / fps, 0.1)
    return int(limit * 8 * 0.85 / seconds)  # 15% for the container and the encoder's overshoot


def fit_mp4(
    frames: list[Image.Image], fps: int, limit: int, tags: Mapping[str, str] | None = None
) -> tuple[bytes, int]:
    """(MP4 bytes under `limit`, re-encodings it took): as encoded, else at a lower bitrate and smaller sizes.

    Raises VideoTooLarge when even the smallest try is over the limit.
    """
    data = encode_mp4(frames, fps, tags=tags)
    tries = 0
    for scale in SCALES:
        if len(data) <= limit:
            return data, tries
        tries += 1
        data = encode_mp4(frames, fps, tags=tags, bitrate=_bitrate_for(limit, len(frames), fps), scale=scale)
    if len(data) <= limit:
        return data, tries
    raise VideoTooLarge(
        f"the video is {size_text(len(data))} even after {tries} re-encodings, over the upload limit of "
        f"{size_text(limit)}: ask for fewer frames or a smaller size"
    )


def size_text(n: int) -> str:
    """Bytes for people: '2.4 MiB', '310 KiB'."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{max(1, round(n / 1024))} KiB"


def encode_gif(frames: list[Image.Image], fps: int, max_side: int = 320) -> bytes:
    """An endlessly looping GIF of the frames, scaled down to at most `max_side` pixels."""
    scale = min(1.0, max_side / max(frames[0].size))
    size = (max(1, int(frames[0].width * scale)), max(1, int(frames[0].height * scale)))
    small = [im.convert("RGB").resize(size, Image.Resampling.LANCZOS) for im in frames]
    buf = io.BytesIO()
    small[0].save(
        buf, format="GIF", save_all=True, append_images=small[1:], duration=max(20, round(1000 / fps)), loop=0
    )
    return buf.getvalue()


def _open(source: bytes | str | Path):  # noqa: ANN202 - an av InputContainer
    import av

    try:
        return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (av.error.FFmpegError, OSError) as e:  # type: ignore[attr-defined]
        raise BadVideo(f"not a readable video: {e}") from None


def probe(source: bytes | str | Path) -> VideoInfo:
    """Frame count (decoded, not trusted from the header), rate, size, codec and metadata of a video."""
    with _open(source) as c:
        stream = c.streams.video[0]
        count = sum(1 for _ in c.decode(stream))
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        return VideoInfo(
            count, rate, stream.width, stream.height, stream.codec_context.name, dict(c.metadata)
        )


def read_frames(source: bytes | str | Path) -> list[np.ndarray]:
    """Every frame as an (H, W, 3) uint8 RGB array."""
    with _open(source) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def first_frame(source: bytes | str | Path) -> Image.Image:
    """The first frame of a video as an RGB image (thumbnails)."""
    with _open(source) as c:
        for frame in c.decode(c.streams.video[0]):
            return frame.to_image().convert("RGB")
    raise BadVideo("the video has no frames")


def shrink_mp4(data: bytes, limit: int) -> bytes:
    """An existing MP4 re-encoded under `limit` (same frames, rate and metadata); VideoTooLarge if it cannot be."""
    if len(data) <= limit:
        return data
    with _open(data) as c:
        stream = c.streams.video[0]
        fps = max(1, round(float(stream.average_rate or 8)))
        frames = [f.to_image() for f in c.decode(stream)]
        tags = {k: v for k, v in c.metadata.items() if k in ("title", META_KEY)}
    return fit_mp4(frames, fps, limit, tags)[0]
