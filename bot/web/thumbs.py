"""Gallery thumbnails: made once per image, in worker threads, saved beside the image, recorded in the store."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from engine.core import Engine
from engine.jobs.result import JobResult, ResultShapeError
from engine.store.history import Generation
from engine.store.jobs import Job

log = logging.getLogger("atelier.web.thumbs")
THUMB_SIDE = 256


def thumb_path(image: Path) -> Path:
    """Where the thumbnail of an image lives: beside it, `<name>.thumb.jpg`."""
    return image.with_name(f"{image.stem}.thumb.jpg")


def make_thumbnail(image: Path) -> Path:
    """Write a JPEG at most THUMB_SIDE on a side next to `image` (blocking; atomic rename)."""
    from PIL import Image

    from engine.video import first_frame

    out = thumb_path(image)
    with first_frame(image) if image.suffix == ".mp4" else Image.open(image) as im:  # a clip: its first frame
        im.thumbnail((THUMB_SIDE, THUMB_SIDE))
        tmp = out.with_name(f".{out.name}.tmp")
        im.convert("RGB").save(tmp, format="JPEG", quality=82)
    tmp.replace(out)
    return out


def inside(path: Path, root: Path) -> bool:
    """True when path (resolved) lies under root: a file recorded elsewhere is never served."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


class Thumbnailer:
    """Schedules thumbnail work off the event loop; each (generation, image) is made at most once at a time."""

    def __init__(self, engine: Engine, parallel: int = 2):
        self.engine = engine
        self.root = engine.settings.path("outputs")
        self._running: dict[tuple[int, int], asyncio.Task[Path | None]] = {}
        self._slots = asyncio.Semaphore(parallel)

    async def _make(self, gen_id: int, idx: int, image: Path) -> Path | None:
        async with self._slots:
            try:
                out = await asyncio.to_thread(make_thumbnail, image)
            except (OSError, ValueError) as e:  # missing or unreadable image: the grid shows a placeholder
                log.warning("no thumbnail for generation %s image %s: %s", gen_id, idx, e)
                return None
            await self.engine.store.web.add_thumbnail(gen_id, idx, str(out))
            return out

    def schedule(self, gen_id: int, idx: int, image: str) -> asyncio.Task[Path | None]:
        """Start (or join) the making of one thumbnail."""
        key = (gen_id, idx)
        task = self._running.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._make(gen_id, idx, Path(image)))
            self._running[key] = task
            task.add_done_callback(lambda _t: self._running.pop(key, None))
        return task

    def on_done(self, job: Job) -> None:
        """Runner subscriber: thumbnail every image of a job that just made a generation (in the background)."""
        try:
            result = JobResult.of(job)
        except ResultShapeError:
            return
        if result is None:
            return
        for i, image in enumerate(result.images):
            if inside(Path(image), self.root):
                self.schedule(result.generation_id, i, image)

    async def missing(self, gens: list[Generation]) -> None:
        """Schedule the first image's thumbnail of each generation that has none yet (returns at once)."""
        have = await self.engine.store.web.thumbnails(g.id for g in gens)
        for g in gens:
            if g.images and (g.id, 0) not in have and inside(Path(g.images[0]), self.root):
                self.schedule(g.id, 0, g.images[0])

    async def path(self, g: Generation, idx: int) -> Path | None:
        """The thumbnail file of image idx, made now (in a thread) if it does not exist yet."""
        if not 0 <= idx < len(g.images) or not inside(Path(g.images[idx]), self.root):
            return None
        known = (await self.engine.store.web.thumbnails([g.id])).get((g.id, idx))
        if known and inside(Path(known), self.root) and Path(known).is_file():
            return Path(known)
        return await self.schedule(g.id, idx, g.images[idx])
