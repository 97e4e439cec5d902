"""The images a job starts from: a visible earlier generation, or an uploaded file under the data folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import Settings
from engine.images import BadImage, decode_image, image_limits
from engine.jobs.runner import JobContext, JobFailed
from engine.store.history import Generation, History, Scope
from engine.store.jobs import Job

if TYPE_CHECKING:
    from PIL import Image


class SourceImages:
    """Reads a job's source, control and reference images; every failure is a JobFailed with the reason."""

    def __init__(self, history: History, settings: Settings) -> None:
        self.history = history
        self.settings = settings

    async def parent(self, gen_id: int, job: Job) -> Generation:
        """A generation the job's user may see (theirs, or their guild's)."""
        g = await self.history.get(gen_id, Scope(job.user_id, job.guild_id, include_guild=True))
        if g is None:
            raise JobFailed(f"generation #{gen_id} does not exist or is not visible to you")
        return g

    async def read(self, path: str, ctx: JobContext, what: str) -> Image.Image:
        """Decode an image file with the upload limits."""
        limits = image_limits(self.settings.images)
        try:  # read and decode in one trip off the event loop
            return await ctx.to_thread(lambda: decode_image(Path(path).read_bytes(), **limits))
        except OSError as e:
            raise JobFailed(f"{what} cannot be read ({path}): {e.strerror or e}") from None
        except BadImage as e:
            raise JobFailed(f"{what}: {e}") from None

    async def uploads(self, paths: list[str], ctx: JobContext, first: int) -> list[Image.Image]:
        """Uploaded images in order; errors name each as "source image N", N counting from `first`."""
        return [await self.read(self.upload(p), ctx, f"source image {i}") for i, p in enumerate(paths, first)]

    async def parent_image(self, g: Generation, index: int, ctx: JobContext) -> Image.Image:
        """Image `index` of a generation."""
        if index >= len(g.images):
            raise JobFailed(f"generation #{g.id} has {len(g.images)} image(s); there is no image {index + 1}")
        return await self.read(g.images[index], ctx, f"image {index + 1} of generation #{g.id}")

    def upload(self, path: str) -> str:
        """Uploaded images and masks are read only from the data or outputs folder (never anywhere else)."""
        roots = [self.settings.path(n).resolve() for n in ("data_dir", "outputs")]
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(r) for r in roots):
            where = " or ".join(str(r) for r in roots)
            raise JobFailed(f"source images and masks must be files under {where}; got {path}")
        return str(resolved)

    async def image(
        self, path: str | None, gen_id: int | None, index: int, job: Job, ctx: JobContext, what: str
    ) -> tuple[Image.Image, str | int]:
        """An image from an upload path or a visible generation, and what it was (path or generation id)."""
        if gen_id is not None:
            g = await self.parent(gen_id, job)
            return await self.parent_image(g, index, ctx), g.id
        if path is None:
            raise JobFailed(f"{what} needs an image")
        return await self.read(self.upload(path), ctx, what), path
