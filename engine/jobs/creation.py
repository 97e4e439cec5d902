"""Which preset a 'generate' job draws with when it is an instruction edit or a draft, and the demo defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.config import Generation, Settings
from engine.config_video import Video
from engine.jobs.payloads import GeneratePayload
from engine.runtime.diffusion.errors import InvalidRequest

DEMO_EDIT_PRESET = "demo-edit"
DEMO_DRAFT_PRESET = "demo-draft"
DEMO_VIDEO_PRESET = "demo-video"
SAMPLING_KEYS = ("steps", "cfg", "scheduler")  # saved per user for their usual preset, not for edits/drafts


@dataclass(frozen=True)
class Choice:
    """The preset a job uses and why: an edit, a draft, or the usual pick."""

    preset: str
    edit: bool = False
    draft: bool = False
    images: int = 1  # an edit's source images (the source, then the payload's edit_images)

    def saved(self, saved: Mapping[str, object]) -> Mapping[str, object]:
        """The saved defaults that apply: an edit or a draft keeps its own preset's sampling settings."""
        if not (self.edit or self.draft):
            return saved
        return {k: v for k, v in saved.items() if k not in SAMPLING_KEYS and k != "preset"}

    def extra(self, prompt: str) -> dict[str, object]:
        """What the history row's params record (the instruction is the prompt too, so search finds it)."""
        if self.edit:
            return {"edit": prompt}
        return {"draft": True} if self.draft else {}


def choose(p: GeneratePayload, saved: Mapping[str, object], gen: Generation, default: str) -> Choice:
    """The request's preset, else the edit or draft preset, else the saved one, else `default`.

    InvalidRequest for an edit when no edit preset is configured.
    """
    if p.edit:
        name = p.preset or gen.edit_preset
        if not name:
            raise InvalidRequest(
                "no edit model is configured (generation.edit_preset); ask for an img2img change instead"
            )
        return Choice(name, edit=True, images=1 + len(p.edit_images))
    draft = p.draft if p.draft is not None else bool(saved.get("draft"))
    if draft and p.preset is None and gen.draft_preset:
        return Choice(gen.draft_preset, draft=True)
    name = p.preset if p.preset is not None else saved.get("preset")
    return Choice(str(name or default), draft=bool(p.draft))


def check_family(choice: Choice, family: str, name: str) -> None:
    """InvalidRequest when an edit names a preset that is not an edit model or gives it more images than it
    takes, or an image job names a video preset."""
    from engine.runtime.diffusion.edit import EDIT_FAMILIES, check_image_count
    from engine.runtime.diffusion.video import is_video_family

    if is_video_family(family):
        raise InvalidRequest(f"preset '{name}' ({family}) makes videos; use /animate with it")
    if choice.edit and family not in EDIT_FAMILIES:
        raise InvalidRequest(
            f"preset '{name}' ({family}) cannot follow instructions; edits need one of: {', '.join(EDIT_FAMILIES)}"
        )
    if choice.edit:
        check_image_count(family, choice.images)


def demo_settings(settings: Settings) -> Settings:
    """Settings for demo mode: the tiny edit, draft and video presets unless the config names others."""
    g = settings.generation
    update: dict[str, object] = {}
    if not g.edit_preset:
        update["edit_preset"] = DEMO_EDIT_PRESET
    if g.draft_preset == Generation.model_fields["draft_preset"].default:
        update["draft_preset"] = DEMO_DRAFT_PRESET
    if settings.video.preset == Video.model_fields["preset"].default:
        settings = settings.model_copy(update={"video": settings.video.model_copy(update={"preset": DEMO_VIDEO_PRESET})})
    if not update:
        return settings
    return settings.model_copy(update={"generation": g.model_copy(update=update)})
