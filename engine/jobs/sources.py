"""The images a job starts from: a visible earlier generation, or an uploaded file under the data folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import Settings
from engine.images import BadImage, decode_image, image_limits
from engine.jobs.payloads import GeneratePayload
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
        self._roots: list[Path] | None = None  # the data and outputs folders, resolved once

    async def parent(self, gen_id: int, job: Job) -> Generation:
        """A generation the job's user may see (theirs, or their guild's)."""
        g = await self.history.get(gen_id, Scope(job.user_id, job.guild_id, include_guild=True))
        if g is None:
            raise JobFailed(f"generation #{gen_id} does not exist or is not visible to you")
        return g

    async def read(self, path: str, ctx: JobContext, what: str) -> Image.Image:
        """Decode an image file with the upload limits."""
        return (await self.read_all([(path, what)], ctx))[0]

    async def read_all(self, files: list[tuple[str, str]], ctx: JobContext) -> list[Image.Image]:
        """Decode image files, each given as (path, what it is), with the upload limits, in one trip off the loop
        (each path checked with upload() there)."""
        limits = image_limits(self.settings.images)

        def decode(path: str, what: str) -> Image.Image:
            path = self.upload(path)
            try:
                return decode_image(Path(path).read_bytes(), **limits)
            except OSError as e:
                raise JobFailed(f"{what} cannot be read ({path}): {e.strerror or e}") from None
            except BadImage as e:
                raise JobFailed(f"{what}: {e}") from None

        return await ctx.to_thread(lambda: [decode(path, what) for path, what in files])

    async def of_request(
        self, p: GeneratePayload, job: Job, ctx: JobContext
    ) -> tuple[Image.Image | None, int | None, Image.Image | None, list[Image.Image]]:
        """(source, its generation id, mask, further edit images) of a request; the uploads read in one trip."""
        if p.source_generation_id is None and p.source_image is None:
            return None, None, None, []
        more = [(p.mask, "the mask")] if p.mask is not None else []
        more += [(x, f"source image {i}") for i, x in enumerate(p.edit_images or [], 2)]
        source, _, images = await self.with_uploads(
            p.source_image, p.source_generation_id, p.source_index, job, ctx, "the source image", more
        )
        mask = images.pop(0) if p.mask is not None else None
        return source, p.source_generation_id, mask, images

    async def parent_image(self, g: Generation, index: int, ctx: JobContext) -> Image.Image:
        """Image `index` of a generation."""
        if index >= len(g.images):
            raise JobFailed(f"generation #{g.id} has {len(g.images)} image(s); there is no image {index + 1}")
        return await self.read(g.images[index], ctx, f"image {index + 1} of generation #{g.id}")

    def upload(self, path: str) -> str:
        """Uploaded images and masks are read only from the data or outputs folder (never anywhere else)."""
        if self._roots is None:
            self._roots = [self.settings.path(n).resolve() for n in ("data_dir", "outputs")]
        roots = self._roots
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(r) for r in roots):
            where = " or ".join(str(r) for r in roots)
            raise JobFailed(f"source images and masks must be files under {where}; got {path}")
        return str(resolved)

    async def image(
        self, path: str | None, gen_id: int | None, index: int, job: Job, ctx: JobContext, what: str
    ) -> tuple[Image.Image, str | int]:
        """An image from an upload path or a visible generation, and what it was (path or generation id)."""
        image, origin, _ = await self.with_uploads(path, gen_id, index, job, ctx, what, [])
        return image, origin

    async def with_uploads(
        self, path: str | None, gen_id: int | None, index: int, job: Job, ctx: JobContext, what: str,
        more: list[tuple[str, str]],
    ) -> tuple[Image.Image, str | int, list[Image.Image]]:  # fmt: skip
        """As image(), plus further uploads given as (path, what they are); every upload is read in one trip."""
        files: list[tuple[str, str]] = []
        first: Image.Image | None = None
        if gen_id is not None:
            g = await self.parent(gen_id, job)
            first, origin = await self.parent_image(g, index, ctx), g.id
        elif path is None:
            raise JobFailed(f"{what} needs an image")
        else:
            files.append((path, what))
            origin = path
        files += more
        images = await self.read_all(files, ctx) if files else []
        return (first if first is not None else images.pop(0)), origin, images
