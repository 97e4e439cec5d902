"""Vision auto-tagging: normalized tags, stored and searchable, made only while the GPU is otherwise idle."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.usecases import account, tag_search
from engine.autotag.normalize import normalize, normalize_all
from engine.autotag.tagger import AutoTagger, runner_busy
from engine.config import Paths, Settings
from engine.runtime.spare import NoRoom, spare_lease
from engine.store.history import Scope
from engine.store.jobs import JobStore
from engine.store.tags import MAX_ATTEMPTS
from tests.llm_fakes import ScriptedChatModel
from tests.test_arbiter import TinyModel, make


def _png(path: Path, color: str = "red") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), color).save(path)
    return str(path)


def test_normalization_lowercases_singularizes_and_applies_aliases() -> None:
    assert normalize("  Cats ") == "cat" and normalize("Kittens") == "cat" and normalize("PUPPIES!") == "dog"
    assert normalize("red apples") == "red apple" and normalize("Leaves") == "leaf" and normalize("boxes") == "box"
    assert normalize("glass") == "glass" and normalize("sunglasses") == "sunglasses" and normalize("b&w") == "black and white"
    assert normalize("...") == "" and normalize("ponies") == "pony"
    assert normalize_all(["Cat", "cats", "kitty", "Dog", "", "trees"], limit=10) == ["cat", "dog", "tree"]
    assert normalize_all([f"tag{i}" for i in range(20)], limit=3) == ["tag0", "tag1", "tag2"]


async def test_tags_are_stored_searchable_in_fts_and_filterable(open_store, tmp_path) -> None:
    store = await open_store()
    a = await store.history.add(user_id=1, prompt="an animal portrait", seed=1, images=[_png(tmp_path / "a.png")])
    b = await store.history.add(user_id=1, prompt="an animal in a field", seed=2, images=[_png(tmp_path / "b.png")])
    other = await store.history.add(user_id=2, prompt="not mine", seed=3, images=[_png(tmp_path / "c.png")])
    assert [g.id for g in await store.tags.pending(5)] == [other, b, a]
    await store.tags.set_tags(a, [["cat", "orange fur"]])
    await store.tags.set_tags(b, [["dog", "meadow"]])
    await store.tags.set_tags(other, [["cat"]])
    assert [g.id for g in await store.tags.pending(5)] == []
    assert await store.tags.of(a) == [["cat", "orange fur"]]
    scope = Scope(1)
    assert [g.id for g in (await store.history.search("meadow", scope)).items] == [b]  # FTS sees the tags
    assert [g.id for g in (await store.history.search("orange", scope)).items] == [a]
    assert [g.id for g in (await tag_search.search(store, "tag:cats", scope, 10)).items] == [a]  # normalized
    assert [g.id for g in (await tag_search.search(store, "animal tag:dog", scope, 10)).items] == [b]
    assert (await tag_search.search(store, "animal tag:dog tag:cat", scope, 10)).items == []
    text = await account.history_search(_Engine(store), "tag:kitten", 1, 0, False)
    assert f"#{a}" in text and f"#{b}" not in text and f"#{other}" not in text
    assert await store.tags.top(1) == [("cat", 1), ("dog", 1), ("meadow", 1), ("orange fur", 1)]
    await store.history.delete(a, 1)
    assert (await store.history.search("orange", scope)).items == []  # the FTS row went with it
    failed = await store.history.add(user_id=1, prompt="x", seed=4, images=[_png(tmp_path / "d.png")])
    for _ in range(MAX_ATTEMPTS):
        assert [g.id for g in await store.tags.pending(5)] == [failed]
        await store.tags.mark_failed(failed)
    assert await store.tags.pending(5) == []


class _Engine:
    def __init__(self, store) -> None:
        from engine.config import Settings

        self.store, self.settings = store, Settings()


class _Busy:
    """A busy flag the test flips; counts how often the tagger asked."""

    def __init__(self, script: list[bool] | None = None) -> None:
        self.script, self.asked = list(script or []), 0

    async def __call__(self) -> bool:
        self.asked += 1
        return self.script.pop(0) if self.script else False

    def now(self) -> bool:
        return False


def _settings(tmp_path: Path) -> Settings:
    return Settings(paths=Paths(data_dir=str(tmp_path)))


async def test_tagger_tags_when_idle_and_yields_between_images(open_store, tmp_path) -> None:
    store = await open_store()
    out = tmp_path / "outputs"
    two = await store.history.add(user_id=1, prompt="p", seed=1, images=[_png(out / "1.png"), "2.png"])
    _png(out / "2.png", "blue")  # a relative path: under outputs
    vision = ScriptedChatModel([{"tags": ["Cats", "kitty", "red sky"]}, {"tags": ["dogs"]},
                                {"tags": ["Trees"]}])  # fmt: skip
    busy = _Busy([False, False, True])  # idle, idle for image 1, then a user job appears before image 2
    tagger = AutoTagger(store, vision, _settings(tmp_path), busy)
    assert await tagger.tag_once() is False
    assert tagger.yielded == 1 and tagger.tagged_images == 1 and await store.tags.of(two) == []
    assert await tagger.tag_once() is True  # idle again: the whole generation, from the start
    assert await store.tags.of(two) == [["dog"], ["tree"]] and vision.remaining == 0
    assert vision.schemas[0]["properties"]["tags"]["maxItems"] == 12
    assert vision.calls[0][1]["content"][1]["image_url"]["url"].startswith("data:image/")
    assert await tagger.tag_once() is False  # nothing left
    assert await AutoTagger(store, vision, _settings(tmp_path), _Busy([True])).tag_once() is False


async def test_unusable_answers_and_missing_files_are_marked_failed(open_store, tmp_path) -> None:
    store = await open_store()
    g = await store.history.add(user_id=1, prompt="p", seed=1, images=[_png(tmp_path / "x.png")])
    gone = await store.history.add(user_id=1, prompt="q", seed=2, images=[str(tmp_path / "missing.png")])
    vision = ScriptedChatModel(["not json"] * 4)
    tagger = AutoTagger(store, vision, _settings(tmp_path), _Busy())
    for _ in range(2 * MAX_ATTEMPTS):
        assert await tagger.tag_once() is True
    assert await store.tags.pending(5) == [] and await store.tags.of(g) == [] and await store.tags.of(gone) == []
    assert vision.remaining == 4 - MAX_ATTEMPTS  # the missing file never reached the model


async def test_runner_busy_sees_queued_jobs(open_store, tmp_path) -> None:
    store = await open_store()
    settings = _settings(tmp_path)
    jobs = JobStore(store.db, settings.queue)

    class _Runner:
        active: dict = {}

    busy = runner_busy(_Runner(), jobs)
    assert await busy() is False
    await jobs.enqueue(1, 0, 0, "generate", {"prompt": "x"})
    assert await busy() is True
    _Runner.active = {1: object()}
    assert await busy() is True


async def test_spare_lease_never_evicts_a_users_model() -> None:
    user, seer = TinyModel("painter", 70), TinyModel("seer", 40)
    arbiter = make(100, models=(user, seer))
    async with arbiter.use("painter"):
        pass
    with pytest.raises(NoRoom, match="evict"):
        async with spare_lease(arbiter, "seer"):
            pass
    assert user.loaded and not seer.loaded and arbiter.evictions == 0
    await arbiter.unload("painter")
    async with spare_lease(arbiter, "seer") as lease:
        assert lease.model is seer and seer.loaded and not lease.contended()
    async with arbiter.use("painter"):  # the user's model still wins: the idle seer steps aside
        assert user.loaded and not seer.loaded


async def test_real_vision_model_tags_an_image(open_store, tmp_path, tmp_path_factory) -> None:
    from engine.runtime.llm.tiny_mmproj import ensure_tiny_mmproj
    from tests.test_vision_llama import text_embd_width, vision_model

    mmproj = ensure_tiny_mmproj(tmp_path_factory.mktemp("mmproj"), text_embd_width())
    model = vision_model(mmproj, 0.0)
    try:
        store = await open_store()
        g = await store.history.add(user_id=1, prompt="p", seed=1, images=[_png(tmp_path / "r.png", "green")])
        tagger = AutoTagger(store, model, _settings(tmp_path), _Busy())
        assert await tagger.tag_once() is True
    finally:
        model.close()
    [tags] = await store.tags.of(g)
    assert tags  # the projector is random: the words are noise, but grammar-bounded and normalized
    assert all(t == normalize(t) and 1 < len(t) <= 32 for t in tags)
