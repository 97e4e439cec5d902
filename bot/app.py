"""The composition root: one App built from Settings, holding the engine, the tools' dependencies and the agent.

    app = await App.start(settings, demo=True)   # store, jobs, runner, models, renderer, agent
    ...                                          # fronts adapt: app.engine, app.agent
    await app.stop()
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.agent import Agent
from bot.runtime import check_models
from engine.autotag.tagger import AutoTagger, runner_busy
from engine.config import Settings
from engine.core import Engine
from engine.runtime.llm.arbiter_chat import ArbiterChat
from engine.runtime.llm.spare_chat import SpareChat
from tools.context import Services as ToolServices
from tools.orchestrator import Orchestrator


@dataclass
class App:
    """Everything one Atelier process runs: the engine and the agent (with the tools' dependencies)."""

    settings: Settings
    engine: Engine
    agent: Agent
    tools: ToolServices
    tagger: AutoTagger | None = None  # vision auto-tagging (autotag.enabled and a vision model)

    @classmethod
    async def start(cls, settings: Settings, *, demo: bool, worker: bool = True) -> App:
        """Build and start everything from settings; ModelNotAvailable when the configured models are missing."""
        engine = await Engine.start(settings, demo=demo, worker=worker)
        settings = engine.settings  # demo mode names the tiny edit and draft presets
        try:
            await check_models(engine)
            llm = await engine.models.llm_model(engine.default_llm_preset)
            chat = ArbiterChat(engine.arbiter, llm)
            vision = chat if llm.preset.vision else None
            if vision is None and engine.default_vision_preset:
                seer = await engine.models.llm_model(engine.default_vision_preset)
                vision = ArbiterChat(engine.arbiter, seer)
            tools = ToolServices(
                store=engine.store, jobs=engine.jobs, settings=settings, submitter=engine.submitter, llm=chat,
                vision=vision, wait_for_job_hook=engine.wait, llm_preset=engine.default_llm_preset,
            )  # fmt: skip
            agent = Agent(chat, Orchestrator(tools), settings)
        except BaseException:
            await engine.stop()
            raise
        tagger = None
        if settings.autotag.enabled and isinstance(vision, ArbiterChat):
            busy = runner_busy(engine.runner, engine.jobs)
            tagger = AutoTagger(engine.store, SpareChat(engine.arbiter, vision.model), settings, busy).start()
        return cls(settings, engine, agent, tools, tagger)

    async def stop(self) -> None:
        """Stop the tagger and the engine (the runner, the models, the store)."""
        if self.tagger is not None:
            await self.tagger.stop()
        await self.engine.stop()
