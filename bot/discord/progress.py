"""One message per job: queue position, step %, throttled previews, then the final images (posted once)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import discord

from bot.discord import best, enhance, render, views
from bot.discord.target import Target
from bot.usecases.jobs import job_prompt
from bot.usecases.quality import eta_text, result_notes
from engine.core import Engine
from engine.jobs.result import JobResult
from engine.store.jobs import Job

log = logging.getLogger(__name__)
Blob = tuple[bytes, str, bool]  # (data, filename, spoiler)


def _files(blobs: list[Blob]) -> list[discord.File]:
    return [discord.File(io.BytesIO(d), filename=n, spoiler=s) for d, n, s in blobs]


def load_result(out: JobResult, limit: int) -> list[Blob]:
    """Read a job's images and fit each under the upload limit (blocking: run in a thread)."""
    blobs = []
    for i, image in enumerate(out.images):
        path = Path(image)
        data, name = render.fit_upload(path.read_bytes(), limit, path.name)
        blobs.append((data, name, out.spoiler(i)))
    return blobs


class ProgressPoster:
    """Runner subscriber: edits each tracked job's message in place and posts results exactly once."""

    def __init__(
        self,
        bot: Any,
        services: Engine,
        *,
        interval_s: float = 1.5,
        queue_refresh_s: float = 5.0,
        claim_grace_s: float = 3.0,
        max_post_attempts: int = 4,
        retry_backoff_s: float = 1.0,
    ):
        self.bot = bot
        self.services = services
        self.interval_s = interval_s
        self.queue_refresh_s = queue_refresh_s
        self.claim_grace_s = claim_grace_s
        self.max_post_attempts = max_post_attempts
        self.retry_backoff_s = retry_backoff_s
        self.targets: dict[int, Target] = {}
        self._waiters: dict[int, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()
        self.edits = 0  # progress edits made (for tests and metrics)

    # -- tracking -----------------------------------------------------------------------------

    async def track(self, job_id: int, target: Target) -> None:
        """Follow a job in `target`'s message: show its queue position now, then progress and result."""
        jobs = self.services.jobs
        target.state = render.ProgressState(job_id, target.label, await jobs.position(job_id))
        target.state.note = await eta_text(self.services, job_id)
        self.targets[job_id] = target
        if ev := self._waiters.get(job_id):
            ev.set()
        await self._edit_progress(target)
        target.editor = asyncio.get_running_loop().create_task(self._editor(job_id, target))
        job = await jobs.get(job_id)
        if job is not None and job.final and not job.posted:
            self._spawn(self._finish(job))

    async def on_progress(self, job_id: int, step: int, total: int, preview: Any = None) -> None:
        """Record the latest step (cheap; the editor task does the throttled edit)."""
        t = self.targets.get(job_id)
        if t is None or t.done or t.state is None:
            return
        t.state.running, t.state.step, t.state.total = True, step, total
        if preview is not None:
            t.preview = (
                preview if isinstance(preview, bytes) else await asyncio.to_thread(render.png_of, preview)
            )
        t.dirty.set()

    async def on_done(self, job: Job) -> None:
        """Post the result in the background (exactly once across posters, via mark_posted).

        A job with no Discord channel (the web API's, the terminal's) belongs to another front: never claimed here.
        """
        if not job.posted and (job.channel_id or job.id in self.targets):
            self._spawn(self._finish(job))

    async def drain(self) -> None:
        """Wait for every background post started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop editor tasks and wait for posts in flight."""
        for t in self.targets.values():
            if t.editor:
                t.editor.cancel()
        await self.drain()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- progress edits -----------------------------------------------------------------------

    async def _editor(self, job_id: int, t: Target) -> None:
        """Coalesce progress into at most one edit per interval; refresh the queue position while queued."""
        jobs = self.services.jobs
        while not t.done:
            try:
                await asyncio.wait_for(t.dirty.wait(), self.queue_refresh_s)
            except TimeoutError:
                if t.state and not t.state.running:
                    pos = await jobs.position(job_id)
                    if pos != t.state.position and pos is not None:
                        t.state.position = pos
                        await self._edit_progress(t)
                continue
            wait = t.last_edit + self.interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            t.dirty.clear()
            if not t.done:
                await self._edit_progress(t)

    async def _edit_progress(self, t: Target) -> None:
        async with t.lock:
            if t.done or t.state is None:
                return
            preview, t.preview = t.preview, None
            files = _files([(preview, "preview.png", False)]) if preview else None
            try:
                await self._put(t, render.progress_text(t.state), files=files)
                self.edits += 1
            except (discord.HTTPException, aiohttp.ClientError, OSError) as e:
                log.warning("progress edit for job %s failed: %s", t.state.job_id, e)
            t.last_edit = time.monotonic()

    async def _put(self, t: Target, content: str, *, files: list[discord.File] | None) -> None:
        """Edit the job's message; past the token's life, continue in a channel message."""
        kw: dict[str, Any] = {"content": content}
        if files is not None:
            kw["attachments"] = files
        if t.token_valid():
            await t.interaction.edit_original_response(**kw)
        elif t.message is not None:
            t.message = await t.message.edit(**kw)
        else:
            t.interaction, t.interim = None, True
            t.message = await t.channel.send(content, files=files or [], reference=self._ref(t))

    def _ref(self, t: Target) -> discord.MessageReference | None:
        if t.reference_id is None:
            return None
        ch = getattr(t.channel, "id", None)
        return discord.MessageReference(message_id=t.reference_id, channel_id=ch, fail_if_not_exists=False)

    # -- the final post -----------------------------------------------------------------------

    async def _finish(self, job: Job) -> None:
        t = self.targets.get(job.id) or await self._wait_target(job)
        if not await self.services.jobs.mark_posted(job.id):
            return  # another poster (or an earlier run) owns this result
        if t is None:
            t = self._fallback_target(job)
        t.done = True
        if t.editor is not None and t.editor is not asyncio.current_task():
            t.editor.cancel()
        async with t.lock:
            try:
                await self._post_final(t, job)
            finally:
                self.targets.pop(job.id, None)

    async def _wait_target(self, job: Job) -> Target | None:
        """A job that just finished may be tracked a moment later (agent path): wait briefly for it."""
        if job.finished_at is None or time.time() - job.finished_at > 30 or self.claim_grace_s <= 0:
            return None
        ev = self._waiters.setdefault(job.id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), self.claim_grace_s)
        self._waiters.pop(job.id, None)
        return self.targets.get(job.id)

    def _fallback_target(self, job: Job) -> Target:
        """An untracked job (e.g. after a restart): post into its channel, replying to its request."""
        ref = job.reply_to.get("message_id")
        channel = self.bot.get_partial_messageable(job.channel_id)
        return Target(job.user_id, channel, reference_id=int(ref) if ref else None)

    async def _post_final(self, t: Target, job: Job) -> None:
        """Deliver the result; retry transient failures, shrink files on 413, fall back to channel.send."""
        out = JobResult.of(job)
        if out is not None:
            text = render.result_text(job.id, job.kind, job_prompt(job), out.seeds, job.user_id)
            text += f"\n{notes}" if (notes := result_notes(out.params)) else ""
            view = views.result_view(job.id, len(out.images), job.kind)
            best.add_others(view, job.id, out)
            enhance.add_enhance(view, job.id, out)
        else:
            text, view = render.failure_text(job.id, job.state, job.error), None
        limit = self._upload_limit(t)
        for attempt in range(self.max_post_attempts):
            try:
                blobs = await asyncio.to_thread(load_result, out, limit) if out is not None else []
                blobs = blobs[: best.SHOWN] if out is not None and best.is_best_of(out) else blobs
                await self._deliver(t, text, blobs, view)
                return
            except discord.HTTPException as e:
                if e.status == 413 or e.code == 40005:
                    limit //= 2
                    continue
                if e.status in (401, 404) and (t.interaction is not None or t.message is not None):
                    t.interaction, t.message = None, None  # token or message gone: post in the channel
                    continue
                if e.status == 403:
                    log.error("cannot post job %s in channel %s: forbidden", job.id, job.channel_id)
                    return
                log.warning("posting job %s failed (attempt %d): %s", job.id, attempt + 1, e)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                log.warning("posting job %s failed (attempt %d): %s", job.id, attempt + 1, e)
            except render.UploadTooLarge as e:
                blobs, text = [], f"{text}\n⚠️ {e}"
            await asyncio.sleep(self.retry_backoff_s * (2**attempt))
        log.error("gave up posting job %s after %d attempts", job.id, self.max_post_attempts)

    async def _deliver(self, t: Target, text: str, blobs: list[Blob], view: discord.ui.View | None) -> None:
        kw: dict[str, Any] = {"content": text, "view": view}
        if t.token_valid():
            await t.interaction.edit_original_response(attachments=_files(blobs), **kw)
            return
        if t.message is not None and not t.interim:
            t.message = await t.message.edit(attachments=_files(blobs), **kw)
            return
        interim, t.message = t.message, None
        await t.channel.send(files=_files(blobs), reference=self._ref(t), **kw)
        if interim is not None:
            with contextlib.suppress(discord.HTTPException):
                await interim.delete()

    def _upload_limit(self, t: Target) -> int:
        limit = self.services.settings.images.upload_limit_bytes
        guild = getattr(t.channel, "guild", None)
        return min(limit, guild.filesize_limit) if guild is not None else limit
