"""The one shape of a finished image job's result, as handlers write it and every front reads it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from engine.store.jobs import Job


class ResultShapeError(ValueError):
    """A job result that is not a JobResult (a bug in the handler that wrote it, never user input)."""


class JobResult(BaseModel):
    """generation_id and its image files (one per seed), spoiler flags, and what was drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    generation_id: int
    images: list[str]
    seeds: list[int]
    spoilers: list[bool]
    withheld: int = 0  # images the safety checker held back
    withheld_message: str | None = None
    params: dict[str, object] = {}
    prompt: str = ""
    negative: str = ""
    preset: str = ""
    style: str = ""
    model: str = ""
    parent_id: int | None = None

    @classmethod
    def of(cls, job: Job) -> JobResult | None:
        """The result of a done job (None while it runs, or when it failed or was cancelled)."""
        if job.state != "done" or job.result is None:
            return None
        try:
            return cls.model_validate(job.result)
        except ValidationError as e:
            raise ResultShapeError(f"job #{job.id} ({job.kind}) has a result of another shape: {e}") from None

    def spoiler(self, index: int) -> bool:
        """Whether image `index` must be posted as a spoiler."""
        return index < len(self.spoilers) and self.spoilers[index]
