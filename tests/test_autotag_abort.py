"""Auto-tagging yields within one step: a user's job stops a vision call at its next token, and the
generation stays pending; the spare lease reports contention; the real llama.cpp call stops mid-way."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from engine.autotag import tagger as tagger_module
from engine.autotag.tagger import AutoTagger, runner_busy, tags_schema
from engine.config import Paths, Settings
from engine.images import to_data_uri
from engine.jobs.runner import JobRunner
from engine.runtime.arbiter import MIB, Arbiter
from engine.runtime.llm import GenerationAborted
from engine.runtime.llm.spare_chat import SpareChat
from engine.runtime.spare import NoRoom, spare_lease
from engine.store.jobs import JobStore
from tests.llm_fakes import SteppedChatModel
from tests.test_arbiter import TinyModel, make

TAGS = {"tags": ["cat", "sofa"]}
PAUSE_AT = 3  # the fake model pauses before this token of the first call while the test submits a job


class _Pause:
    """on_step for SteppedChatModel: before token PAUSE_AT of call 0, signal `reached` and wait for `resume`."""

    def __init__(self) -> None:
        self.reached, self.resume = threading.Event(), threading.Event()

    def __call__(self, call: int, token: int) -> None:
        if call == 0 and token == PAUSE_AT:
            self.reached.set()
            assert self.resume.wait(10), "the test never resumed the fake model"

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, 10), "the tag call never reached its pause"


def _png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "red").save(path)
    return str(path)


async def _tagging_rows(store, gid: int) -> list:
    return await store.db.fetchall("SELECT state, attempts FROM tagging WHERE generation_id = ?", (gid,))


async def test_user_job_claimed_mid_call_stops_it_within_one_token_and_leaves_it_pending(
    open_store, tmp_path
) -> None:
    store = await open_store()
    settings = Settings(paths=Paths(data_dir=str(tmp_path)))
    gid = await store.history.add(user_id=1, prompt="p", seed=1, images=[_png(tmp_path / "a.png")])
    release = asyncio.Event()

    async def generate(job, ctx) -> dict:
        await release.wait()
        return {}

    jobs = JobStore(store.db, settings.queue)
    runner = JobRunner(jobs, None, {"generate": generate}, settings, "w", poll_s=0.02, cancel_poll_s=0.02)
    pause = _Pause()
    vision = SteppedChatModel(TAGS, tokens=20, on_step=pause)
    tagger = AutoTagger(store, vision, settings, runner_busy(runner, jobs))
    await runner.start()
    try:
        tag = asyncio.ensure_future(tagger.tag_once())
        await pause.wait_reached()  # PAUSE_AT tokens generated; the model thread waits before the next one
        await jobs.enqueue(1, 0, 0, "generate", {"prompt": "x"})
        runner.wake()
        for _ in range(500):  # the runner claims it (no timing assert: just wait for the claim)
            if runner.active:
                break
            await asyncio.sleep(0.01)
        assert runner.active
        pause.resume.set()
        assert await tag is False
        assert vision.generated == [PAUSE_AT]  # not one token after the claim
        assert tagger.yielded == tagger.aborted == 1 and tagger.tagged_images == 0
        assert await store.tags.of(gid) == [] and await _tagging_rows(store, gid) == []  # pending, not failed
        assert [g.id for g in await store.tags.pending(5)] == [gid]
        release.set()
        await runner.run_until_idle(10)
    finally:
        release.set()
        await runner.stop()
    assert await tagger.tag_once() is True  # idle again: retried from the start
    assert await store.tags.of(gid) == [["cat", "sofa"]] and vision.generated[1] == 20


async def test_a_job_queued_elsewhere_is_seen_by_the_queue_watcher(open_store, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tagger_module, "WATCH_POLL_S", 0.01)
    store = await open_store()
    settings = Settings(paths=Paths(data_dir=str(tmp_path)))
    gid = await store.history.add(user_id=1, prompt="p", seed=1, images=[_png(tmp_path / "a.png")])
    jobs = JobStore(store.db, settings.queue)

    class _NoWorkerHere:  # jobs run in another process: only the queue shows them
        active: dict = {}

    pause = _Pause()
    slow = threading.Event()

    def on_step(call: int, token: int) -> None:
        pause(call, token)
        slow.wait(0.01)  # a "token" takes 10 ms; the watcher's next poll comes within a few

    vision = SteppedChatModel(TAGS, tokens=3000, on_step=on_step)
    tagger = AutoTagger(store, vision, settings, runner_busy(_NoWorkerHere(), jobs))
    tag = asyncio.ensure_future(tagger.tag_once())
    await pause.wait_reached()
    await jobs.enqueue(1, 0, 0, "generate", {"prompt": "x"})
    pause.resume.set()
    assert await tag is False
    assert PAUSE_AT <= vision.generated[0] < 3000 and tagger.yielded == 1
    assert await _tagging_rows(store, gid) == []


class _SteppedSeer(TinyModel):
    """A Managed vision model for the arbiter whose chat is a SteppedChatModel's."""

    def __init__(self, chat: SteppedChatModel) -> None:
        super().__init__("seer", 40, kind="llm")
        self.chat = chat.chat


async def test_spare_chat_stops_when_a_user_needs_the_memory_and_the_user_evicts_it() -> None:
    arbiter, main_nice = make(100), os.getpriority(os.PRIO_PROCESS, 0)
    painter = TinyModel("painter", 70, kind="diffusion")
    pause, nice = _Pause(), []

    def on_step(call: int, token: int) -> None:
        nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        pause(call, token)

    seer = _SteppedSeer(SteppedChatModel(TAGS, tokens=20, on_step=on_step))
    arbiter.register(painter)
    arbiter.register(seer)
    messages = [{"role": "user", "content": "tag"}]
    call = asyncio.ensure_future(SpareChat(arbiter, seer).achat(messages, tags_schema(4)))
    await pause.wait_reached()
    assert seer.loaded and not painter.loaded

    async def user_job() -> bool:
        async with arbiter.use("painter"):  # needs the seer's memory: waits for its hold, then evicts it
            return painter.loaded and not seer.loaded

    user = asyncio.ensure_future(user_job())
    for _ in range(100):
        await asyncio.sleep(0)  # let the user's use() count its hold and start waiting
    pause.resume.set()
    with pytest.raises(GenerationAborted) as aborted:
        await call
    assert aborted.value.tokens == PAUSE_AT
    assert await user is True and arbiter.evictions == 1
    assert set(nice) == {19} and os.getpriority(os.PRIO_PROCESS, 0) == main_nice  # only the background thread


async def test_spare_lease_sees_contention_and_stays_out_while_others_work() -> None:
    arbiter = Arbiter(budget_bytes=200 * MIB, device="cpu", probe=lambda: 0)
    arbiter.register(TinyModel("painter", 70))
    arbiter.register(TinyModel("seer", 40))
    async with spare_lease(arbiter, "seer") as lease:
        assert not lease.contended()
        async with arbiter.use("painter"):  # room for both: no wait, but the device is in use
            assert lease.contended()
        assert not lease.contended()
        async with arbiter.use("seer"):  # a user of the same model would queue behind the call
            assert lease.contended()
    async with arbiter.use("painter"):
        with pytest.raises(NoRoom, match="another model is in use"):
            async with spare_lease(arbiter, "seer"):
                pass


def _tag_messages() -> list[dict]:
    uri = to_data_uri(Image.new("RGB", (32, 32), "green"))
    return [
        {"role": "system", "content": tagger_module.INSTRUCTIONS},
        {"role": "user", "content": [
            {"type": "text", "text": "Tag this image."}, {"type": "image_url", "image_url": {"url": uri}},
        ]},
    ]  # fmt: skip


def test_real_vision_call_stops_early_when_abort_turns_true_mid_call(tmp_path_factory) -> None:
    from engine.runtime.llm.tiny_mmproj import ensure_tiny_mmproj
    from tests.test_vision_llama import text_embd_width, vision_model

    model = vision_model(ensure_tiny_mmproj(tmp_path_factory.mktemp("mmproj"), text_embd_width()), 0.0)
    messages = _tag_messages()  # free text: the random projector's JSON may not close within a few tokens
    try:
        plain = model.chat(messages, max_tokens=24)
        streamed = model.chat(messages, max_tokens=24, abort=lambda: False)
        asked = itertools.count(1)
        with pytest.raises(GenerationAborted) as aborted:
            model.chat(messages, max_tokens=24, abort=lambda: next(asked) > 4)  # true on the 5th check
        after = model.chat(messages, max_tokens=24)
    finally:
        model.close()
    assert plain.completion_tokens > 6  # enough tokens that stopping early is visible
    assert streamed.text == plain.text and streamed.finish_reason == plain.finish_reason  # nothing lost
    assert 0 < aborted.value.tokens <= 4 < plain.completion_tokens  # stopped at the check that said so
    assert after.text == plain.text  # the model is left usable
