"""Wiring shared by every front: start the engine services, check the models, build the agent."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.managed import ModelNotAvailable

log = logging.getLogger(__name__)


class ArbiterChat:
    """A ChatModel that holds the arbiter's lease on an LLM for each call (the arbiter loads/evicts it)."""

    def __init__(self, arbiter: Any, name: str):
        self.arbiter = arbiter
        self.name = name

    def chat(self, *args: Any, **kwargs: Any) -> Any:
        """Blocking chat is not offered here: the front runs on an event loop."""
        raise RuntimeError("ArbiterChat is async only; use achat()")

    async def achat(
        self, messages: list, schema: dict | None = None, *, max_tokens: int | None = None
    ) -> Any:
        """Hold the model loaded for one (threaded) completion."""
        async with self.arbiter.use(self.name) as model:
            return await model.achat(messages, schema, max_tokens=max_tokens)


def _looks_local(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or Path(ref).suffix in (".safetensors", ".ckpt")


async def check_models(services: Any) -> None:
    """Raise ModelNotAvailable (with the fix) when the default image or LLM model is not on this machine."""
    from engine.llm.presets import resolve_file

    s = services
    preset = await s.store.presets.resolve("image", s.default_image_preset)
    runtime = await s.models.image_preset(preset)
    ref = str(runtime["model"])
    if _looks_local(ref) or Path(ref).exists():
        if not Path(ref).expanduser().exists():
            raise ModelNotAvailable(f"image preset '{preset['name']}': model not found at {ref}")
    else:
        import huggingface_hub as hf

        if not isinstance(hf.try_to_load_from_cache(ref, "model_index.json"), str):
            raise ModelNotAvailable(
                f"image preset '{preset['name']}': {ref} is not downloaded; run `huggingface-cli download {ref}`"
                " or start with --demo"
            )
    llm = await s.models.llm_preset(s.default_llm_preset)
    got = resolve_file(llm, llm.model, s.settings.path("models"), download=False, what="model")
    if isinstance(got, int):
        raise ModelNotAvailable(f"LLM preset '{llm.name}': {llm.model} is not downloaded yet ({got} bytes)")


async def build(settings: Settings, *, demo: bool) -> tuple[Any, Any]:
    """(engine Services, Agent), the worker started; the caller stops the services."""
    from bot.agent import Agent
    from engine.services import Services
    from tools.context import Services as ToolServices
    from tools.orchestrator import Orchestrator

    services = await Services.start(settings, demo=demo)
    try:
        await check_models(services)
        llm = await services.models.llm_model(services.default_llm_preset)
        chat = ArbiterChat(services.arbiter, llm.name)
        tool_services = ToolServices(
            store=services.store,
            jobs=services.jobs,
            settings=settings,
            llm=chat,
            vision=chat if llm.preset.vision else None,
            wait_for_job_hook=services.wait,
            llm_preset=services.default_llm_preset,
        )
        agent = Agent(chat, Orchestrator(tool_services), settings)
    except BaseException:
        await services.stop()
        raise
    return services, agent
