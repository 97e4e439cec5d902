"""Wiring shared by every front: start the engine services, check the models, build the agent."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine.config import Settings
from engine.managed import ModelNotAvailable

if TYPE_CHECKING:
    from engine.model_files import PresetFiles, Source

log = logging.getLogger(__name__)


class ArbiterChat:
    """A ChatModel that holds the arbiter's lease on an LLM for each call (the arbiter loads/evicts it)."""

    def __init__(self, arbiter: Any, name: str, model: Any = None):
        self.arbiter = arbiter
        self.name = name
        self.model = model  # the registered LlamaModel, for token counts (no lease needed)

    @property
    def n_ctx(self) -> int:
        """The model's context window."""
        return int(self.model.n_ctx)

    def count_tokens(self, messages: list) -> int:
        """Tokens the messages take, with the model's tokenizer."""
        return int(self.model.count_tokens(messages))

    def chat(self, *args: Any, **kwargs: Any) -> Any:
        """Blocking chat is not offered here: the front runs on an event loop."""
        raise RuntimeError("ArbiterChat is async only; use achat()")

    async def achat(
        self, messages: list, schema: dict | None = None, *, max_tokens: int | None = None
    ) -> Any:
        """Hold the model loaded for one (threaded) completion."""
        async with self.arbiter.use(self.name) as model:
            return await model.achat(messages, schema, max_tokens=max_tokens)


def _not_ready(src: Source) -> str:
    name = f"{src.role} {src.filename} from {src.ref}" if src.filename else f"{src.role} {src.ref}"
    return f"{name} is not downloaded" if src.kind in ("hub-file", "hub-repo") else f"{name}: {src.note}"


def _missing(pf: PresetFiles) -> str:
    """What is missing of one preset, e.g. "image preset 'sdxl': model ... is not downloaded"."""
    kind = "LLM" if pf.kind == "llm" else pf.kind
    return f"{kind} preset '{pf.name}': " + ", ".join(_not_ready(src) for src in pf.sources if not src.ready)


def _commands(fixes: list[str]) -> str:
    return " and ".join(f"`{f}`" if f.startswith(("atelier ", "pip ")) else f for f in fixes)


async def check_models(services: Any) -> None:
    """Raise ModelNotAvailable naming the `atelier models pull NAME` to run for each missing model."""
    import asyncio

    from engine.model_files import preset_files

    s = services
    wanted = [("image", s.default_image_preset), ("llm", s.default_llm_preset)]
    if s.default_vision_preset:
        wanted.append(("llm", s.default_vision_preset))
    problems: list[str] = []
    fixes: list[str] = []
    for kind, name in wanted:
        data = await s.store.presets.resolve(kind, name)
        pf = await asyncio.to_thread(preset_files, kind, data, s.settings)
        if not pf.ready:
            problems.append(_missing(pf))
            fixes += [f for f in pf.fixes if f not in fixes]
    if problems:
        raise ModelNotAvailable(
            f"{'; '.join(problems)}. Run {_commands(fixes)},"
            " or start with --demo to use the offline test models"
        )
    image = await s.store.presets.resolve("image", s.default_image_preset)
    await s.models.image_preset(image)  # resolves demo:/pkg: references now (builds the demo models once)


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
        chat = ArbiterChat(services.arbiter, llm.name, llm)
        vision = chat if llm.preset.vision else None
        if vision is None and services.default_vision_preset:
            seer = await services.models.llm_model(services.default_vision_preset)
            vision = ArbiterChat(services.arbiter, seer.name, seer)
        tool_services = ToolServices(
            store=services.store,
            jobs=services.jobs,
            settings=settings,
            llm=chat,
            vision=vision,
            wait_for_job_hook=services.wait,
            llm_preset=services.default_llm_preset,
        )
        agent = Agent(chat, Orchestrator(tool_services), settings)
    except BaseException:
        await services.stop()
        raise
    return services, agent
