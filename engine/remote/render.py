"""Where a job's model work runs: here (LocalRenderer: batcher + arbiter) or on a worker (RemoteRenderer).

Handlers (engine/jobs/handlers.py, engine/jobs/animate.py) resolve everything against the bot's store, then
call `renderer.generate(preset, req, ctx)` / `renderer.upscale(...)` / `renderer.clip(spec, ctx)`, and record
the result themselves, so the history row is written once, by the bot, whichever backend ran the pixels.
"""

from __future__ import annotations

from typing import Any

from engine.jobs.clips import Clip, ClipSpec
from engine.remote.protocol import decode_images, encode_clip_spec, encode_request, png


class RemoteRenderer:
    """Hands model work to `atelier worker` processes through a RemoteQueue."""

    def __init__(self, remote: Any, upscaler_configured: bool = False) -> None:
        self.remote = remote
        self.upscaler_configured = upscaler_configured

    async def generate(self, preset: dict[str, Any], req: Any, ctx: Any) -> list[Any]:
        """The request's images, rendered (and maybe batched with others) on some worker."""
        out = await self.remote.call(ctx, "render", {"preset": preset, "request": encode_request(req)})
        return decode_images(out["images"])

    async def upscale(
        self, preset: dict[str, Any], image: Any, factor: int, prompt: str, seed: int, kw: dict, ctx: Any
    ) -> Any:
        """One upscaled image from some worker (its own generation.upscaler decides the method)."""
        payload = {
            "preset": preset, "image": png(image), "factor": factor, "prompt": prompt, "seed": seed,
            "kw": kw, "upscaler": self.upscaler_configured,
        }  # fmt: skip
        out = await self.remote.call(ctx, "upscale", payload)
        return decode_images(out["images"])[0]

    async def clip(self, spec: ClipSpec, ctx: Any) -> Clip:
        """A clip rendered and encoded (under spec.limits, re-encoded there) on some worker."""
        out = await self.remote.call(ctx, "animate", encode_clip_spec(spec))
        return Clip(out["mp4"], out["gif"], int(out["reencodes"]), bool(out["spoiler"]))

    async def close(self) -> None:
        """The RemoteQueue is closed by its owner."""


def remote_handler(remote: Any, op: str) -> Any:
    """A JobRunner handler that runs worker op `op` with the job's payload (diagnostics, tests, bench)."""

    async def handler(job: Any, ctx: Any) -> dict:
        out = await remote.call(ctx, op, dict(job.payload))
        return {k: v for k, v in out.items() if k not in ("images",)}

    return handler
