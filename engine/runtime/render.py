"""Where a job's model work runs in this process: the cross-user batcher for txt2img, the arbiter for the rest.

Handlers (engine/jobs/handlers.py) resolve everything against the bot's store, then call
`renderer.generate(preset, req, ctx)` / `renderer.upscale(...)`; `atelier worker` processes run the same
LocalRenderer behind the redis backend (engine/remote), so there is one rendering path.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from engine.runtime.batching import DiffusionBatcher, RenderItem


class Renderer(Protocol):
    """Where handlers get pixels: LocalRenderer here, RemoteRenderer (engine.remote) on workers."""

    async def generate(self, preset: dict[str, Any], req: Any, ctx: Any) -> list[Any]:
        """The request's images."""
        ...

    async def upscale(
        self, preset: dict[str, Any], image: Any, factor: int, prompt: str, seed: int, kw: dict, ctx: Any
    ) -> Any:
        """One upscaled image."""
        ...

    async def close(self) -> None:
        """Release what the renderer holds."""
        ...


class LocalRenderer:
    """Runs model work in this process: txt2img through the cross-user batcher, upscales directly."""

    def __init__(self, models: Any, arbiter: Any, batcher: DiffusionBatcher) -> None:
        self.models = models
        self.arbiter = arbiter
        self.batcher = batcher

    async def model(self, preset: dict[str, Any]) -> Any:
        """The registered DiffusionModel of a validated image preset."""
        return await self.models.image_model(await self.models.image_preset(preset))

    async def generate(self, preset: dict[str, Any], req: Any, ctx: Any) -> list[Any]:
        """The request's images (raises what DiffusionModel.generate raises)."""
        model = await self.model(preset)
        if req.guided:  # ControlNets / reference: never batched; the nets are held beside the model
            from engine.runtime.control.render import render_guided

            return await render_guided(self.models, self.arbiter, model, req, ctx.progress, ctx.should_cancel)
        return await self.batcher.generate(RenderItem(model, req, ctx.progress, ctx.should_cancel))

    async def upscale(
        self, preset: dict[str, Any], image: Any, factor: int, prompt: str, seed: int, kw: dict, ctx: Any,
        *, upscaler: bool = True,
    ) -> Any:  # fmt: skip
        """One upscaled image (the dedicated upscaler when configured and wanted, else the tiled img2img pass)."""
        model = await self.model(preset)
        upscaler = await self.models.upscaler() if upscaler else None
        async with contextlib.AsyncExitStack() as stack:
            m = await stack.enter_async_context(self.arbiter.use(model.name))
            up = await stack.enter_async_context(self.arbiter.use(upscaler.name)) if upscaler else None
            return await self.arbiter.lane.run(
                m.upscale, image, factor, prompt, seed, up,
                progress=ctx.progress, should_cancel=ctx.should_cancel, **kw,
            )  # fmt: skip

    async def close(self) -> None:
        """Stop the batcher lane."""
        await self.batcher.close()
