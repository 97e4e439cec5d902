"""Model work for guided requests (ControlNets and/or a reference image), here or on an `atelier worker`."""

from __future__ import annotations

import contextlib
from typing import Any

from PIL import Image


async def render_guided(
    models: Any, arbiter: Any, model: Any, req: Any, progress: Any = None, should_cancel: Any = None
) -> list[Image.Image]:
    """Hold the request's ControlNets and the diffusion model through the arbiter and generate (off-loop)."""
    req = await models.control.resolve(req)
    nets = [await models.control.controlnet(c.model, req.family) for c in req.controls]
    async with contextlib.AsyncExitStack() as stack:
        held: dict[str, Any] = {}
        for net in nets:  # the same ControlNet twice (e.g. two canny maps) is held once
            if net.name not in held:
                held[net.name] = await stack.enter_async_context(arbiter.use(net.name))
        loaded = await stack.enter_async_context(arbiter.use(model.name))
        modules = [held[n.name].module for n in nets]
        return await arbiter.lane.run(loaded.generate, req, progress, should_cancel, modules)


async def preprocess(
    models: Any, arbiter: Any, kind: str, image: Image.Image, resolution: int
) -> Image.Image:
    """The control map of `image` for control type `kind` (the preprocessor is an arbiter client)."""
    pre = await models.control.preprocessor(kind)
    async with arbiter.use(pre.name) as loaded:
        return await arbiter.lane.run(loaded.run, image, resolution)
