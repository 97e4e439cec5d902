"""Shipped data files validate and seed idempotently; library, presets and settings behave."""

import pytest

from engine.autotag.normalize import TAGS_FILE, load_tags_file
from engine.store.library import Saved, UnknownEntry
from engine.store.seed import (
    LIBRARY_FILES,
    PROMPTS_DIR,
    DataFileError,
    load_library_file,
    load_presets_file,
    load_shipped,
)


def test_every_shipped_data_file_loads():
    # prompts/agent/ is validated by tools.prompts (tests/test_tools.py); everything else is ours
    toml_files = {p for p in PROMPTS_DIR.rglob("*.toml") if p.parent.name != "agent"}
    covered = {PROMPTS_DIR / "library" / n for n in LIBRARY_FILES} | {PROMPTS_DIR / "presets.toml", TAGS_FILE}
    assert toml_files <= covered, f"unvalidated data files: {toml_files - covered}"
    tags = load_tags_file()
    assert tags.aliases["kitty"] == "cat" and all(v == v.lower() for v in tags.aliases.values())
    shipped = load_shipped()
    assert len(shipped["style"]) >= 20
    assert len(shipped["negative"]) >= 5
    assert {p.family for p in shipped["image"]} >= {"sd15", "sdxl", "flux"}
    assert any(p.mmproj for p in shipped["llm"])
    for style in shipped["style"]:
        assert "{prompt}" in style.content, style.label


def test_a_bad_tags_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "tags.toml"
    path.write_text('[aliases]\nKitty = "cat"\n')
    with pytest.raises(DataFileError, match="tags.toml: key 'aliases.Kitty.\\[key\\]'"):
        load_tags_file(path)
    path.write_text('[plurals]\nwords = []\n')
    with pytest.raises(DataFileError, match="tags.toml: key 'plurals'"):
        load_tags_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[entry]]\nlabel = "Bad Label"\ncontent = "x {prompt}"\n', "field 'label'"),
        ('[[entry]]\nlabel = "ok"\n', "field 'content'"),
        ('[[entry]]\nlabel = "ok"\ncontent = "abc"\ncolour = 1\n', "field 'colour'"),
        ('[[entry]]\nlabel = "a"\ncontent = "abc"\n[[entry]]\nlabel = "a"\ncontent = "def"\n', "duplicate"),
        ("[[entry]\n", "bad.toml"),
        ('[[styles]]\nlabel = "a"\n', "unknown top-level"),
    ],
)
def test_bad_library_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DataFileError, match=message):
        load_library_file(path)


def test_bad_preset_file_names_the_entry(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text('[[image]]\nname = "x"\nmodel = "m"\nfamily = "sd3"\n')
    with pytest.raises(DataFileError, match=r"\[\[image\]\] #1 field 'family'"):
        load_presets_file(path)


async def test_seed_is_idempotent_and_complete(open_store):
    store = await open_store("l.db")
    shipped = load_shipped()
    n = await store.library.count()
    assert n == sum(len(shipped[c]) for c in LIBRARY_FILES.values())
    from engine.store.seed import seed

    await seed(store.db)
    assert await store.library.count() == n


async def test_styles_apply_and_unknown_names_suggest(open_store):
    store = await open_store("s.db")
    wc = await store.library.get("watercolor", "style")
    assert wc.apply("a lighthouse").startswith("a lighthouse, loose watercolor")
    with pytest.raises(UnknownEntry, match="watercolor"):
        await store.library.get("watercolour", "style")
    # a guild's own entry shadows the global one only in that guild
    await store.library.add("watercolor", "style", "{prompt}, guild wash", guild_id=5, author_id=9)
    assert (await store.library.get("watercolor", "style", guild_id=5)).content.endswith("guild wash")
    assert (await store.library.get("watercolor", "style", guild_id=6)).shipped
    assert len(await store.library.list("style", guild_id=5)) == len(await store.library.list("style"))
    assert await store.library.delete("watercolor", "style", guild_id=5)


async def test_presets_resolve_user_then_guild_then_global(open_store):
    store = await open_store("p.db")
    p = store.presets
    assert (await p.resolve("image", "sd15"))["family"] == "sd15"
    await p.save("image", "sd15", {"model": "guild-model", "family": "sd15"}, guild_id=7)
    await p.save("image", "sd15", {"model": "my-model", "family": "sd15"}, user_id=1, guild_id=7)
    assert (await p.resolve("image", "sd15", user_id=1, guild_id=7))["model"] == "my-model"
    assert (await p.resolve("image", "sd15", user_id=2, guild_id=7))["scope"] == "guild"
    assert (await p.resolve("image", "sd15", user_id=1, guild_id=8))["scope"] == "global"
    with pytest.raises(UnknownEntry, match="sdxl"):
        await p.resolve("image", "sdx1")
    assert not await p.delete("image", "sd15")  # shipped presets are not deletable
    assert await p.delete("image", "sd15", user_id=1, guild_id=7)


async def test_user_and_guild_settings_merge(open_store):
    store = await open_store("u.db")
    assert await store.settings.get("user", 1) == {}
    await store.settings.update("user", 1, preset="sdxl", aspect="16:9")
    assert await store.settings.update("user", 1, aspect=None, style="moody") == {
        "preset": "sdxl",
        "style": "moody",
    }
    await store.settings.update("guild", 3, safety="spoiler")
    assert (await store.settings.get("guild", 3))["safety"] == "spoiler"
    assert await store.settings.get("user", 2) == {}


async def test_a_requesters_user_and_guild_settings_come_back_from_one_read(open_store):
    store = await open_store("pair.db")
    await store.settings.update("user", 1, preset="sdxl")
    await store.settings.update("guild", 3, safety="spoiler")
    await store.settings.update("guild", 0, safety="off")  # no guild: never read as one
    both = await store.settings.pair(1, 3)
    assert (both.user, both.guild) == ({"preset": "sdxl"}, {"safety": "spoiler"})
    assert (await store.settings.pair(2, 3)).user == {}
    assert await store.settings.pair(1, 0) == Saved({"preset": "sdxl"}, {})
