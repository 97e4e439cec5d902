"""CLIP scores of a job's images (off the loop, behind the arbiter) and best-of-N ordering."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine.config import Settings
from engine.jobs.runner import JobContext
from engine.runtime.arbiter import Arbiter
from engine.runtime.managed import ModelNotAvailable
from engine.runtime.scoring import TINY_CLIP_REF, ClipScorer, ensure_tiny_clip

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("atelier.scoring")
DEMO_PREFIX = "demo:"


class Evaluator:
    """Scores images with the configured CLIP model; demo: presets use the offline tiny CLIP."""

    def __init__(self, arbiter: Arbiter, settings: Settings) -> None:
        self.arbiter = arbiter
        self.settings = settings
        self._scorers: dict[str, ClipScorer] = {}
        self._missing: set[str] = set()

    def ref_for(self, preset: dict[str, Any]) -> str:
        """The CLIP model that scores this preset's images."""
        if str(preset.get("model", "")).startswith(DEMO_PREFIX):
            return TINY_CLIP_REF
        return self.settings.scoring.clip_model

    async def _scorer(self, ref: str, ctx: JobContext) -> ClipScorer | None:
        if ref in self._scorers:
            return self._scorers[ref]
        path = ref
        if ref == TINY_CLIP_REF:
            folder = self.settings.path("demo_models") / "tiny-clip"
            path = str(await ctx.to_thread(ensure_tiny_clip, folder))
        scorer = ClipScorer(f"clip-scorer@{len(self._scorers)}", path, self.settings.path("models"))
        try:
            scorer.path()
        except ModelNotAvailable as e:
            if ref not in self._missing:
                log.warning("no CLIP scores: %s (atelier models pull, or set scoring.clip_model)", e)
                self._missing.add(ref)
            return None
        self.arbiter.register(scorer)
        self._scorers[ref] = scorer
        return scorer

    async def scores(self, preset: dict[str, Any], prompt: str, images: list[Image.Image], ctx: JobContext) -> list[float] | None:  # noqa: E501
        """The CLIP score of each image, or None when scoring is off or its model is not available."""
        if not self.settings.scoring.enabled or not images:
            return None
        scorer = await self._scorer(self.ref_for(preset), ctx)
        if scorer is None:
            return None
        async with self.arbiter.use(scorer.name):
            return await self.arbiter.lane.run(scorer.score, prompt, images)


def best_first(scores: list[float]) -> list[int]:
    """Indices ordered by score, the best first (a tie keeps the batch order)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
