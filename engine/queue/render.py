"""Where a job's model work runs: here (LocalRenderer: batcher + arbiter) or on a worker (RemoteRenderer).

Handlers (engine/generate.py) resolve everything against the bot's store, then call
`renderer.generate(preset, req, ctx)` / `renderer.upscale(...)`, and record the result themselves, so the
history row is written once, by the bot, whichever backend ran the pixels.
"""

from __future__ import annotations

import contextlib
from typing import Any

from engine.batching import DiffusionBatcher, RenderItem
from engine.queue.protocol import decode_images, encode_request, png


class LocalRenderer:
    """Runs model work in this process: txt2img through the cross-user batcher, upscales directly."""

    def __init__(self, models: Any, arbiter: Any, batcher: DiffusionBatcher) -> None:
        self.models = models
        self.arbiter = arbiter
        self.batcher = batcher

    async def _model(self, preset: dict[str, Any]) -> Any:
        return await self.models.image_model(await self.models.image_preset(preset))

    async def generate(self, preset: dict[str, Any], req: Any, ctx: Any) -> list[Any]:
        """The request's images (raises what DiffusionModel.generate raises)."""
        model = await self._model(preset)
        if req.guided:  # ControlNets / reference: never batched; the nets are held beside the model
            from engine.control.render import render_guided

            return await render_guided(self.models, self.arbiter, model, req, ctx.progress, ctx.should_cancel)
        return await self.batcher.generate(RenderItem(model, req, ctx.progress, ctx.should_cancel))

    async def upscale(
        self, preset: dict[str, Any], image: Any, factor: int, prompt: str, seed: int, kw: dict, ctx: Any
    ) -> Any:
        """One upscaled image (dedicated upscaler when configured, else the tiled img2img pass)."""
        model = await self._model(preset)
        upscaler = await self.models.upscaler()
        async with contextlib.AsyncExitStack() as stack:
            m = await stack.enter_async_context(self.arbiter.use(model.name))
            up = await stack.enter_async_context(self.arbiter.use(upscaler.name)) if upscaler else None
            return await ctx.to_thread(
                m.upscale, image, factor, prompt, seed, up,
                progress=ctx.progress, should_cancel=ctx.should_cancel, **kw,
            )  # fmt: skip

    async def close(self) -> None:
        """Stop the batcher lane."""
        await self.batcher.close()


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

    async def close(self) -> None:
        """The RemoteQueue is closed by its owner."""


def remote_handler(remote: Any, op: str) -> Any:
    """A JobRunner handler that runs worker op `op` with the job's payload (diagnostics, tests, bench)."""

    async def handler(job: Any, ctx: Any) -> dict:
        out = await remote.call(ctx, op, dict(job.payload))
        return {k: v for k, v in out.items() if k not in ("images",)}

    return handler
