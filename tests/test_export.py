"""Dataset export: favorites → images + captions (tags or prompt) + metadata.jsonl, on disk, as zips, CLI, /export."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from bot.usecases import export
from bot.usecases.errors import UserError
from engine.store import Store


def _png(path: Path, color: str, noise: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (32, 32), color)
    if noise:
        im = Image.effect_noise((noise, noise), 100).convert("RGB")
    im.save(path)
    return str(path)


async def _fill(store: Store, tmp: Path, user: int = 7) -> list[int]:
    """Three generations of `user` (two favorites, one tagged) and one favorite of someone else."""
    out = tmp / "outputs"
    a = await store.history.add(user_id=user, prompt="a red fox", seed=1, preset="demo",
                                images=[_png(out / "a0.png", "red"), _png(out / "a1.png", "orange")],
                                params={"seeds": [1, 2]})  # fmt: skip
    b = await store.history.add(user_id=user, prompt="a blue owl", seed=5, images=[_png(out / "b0.png", "blue")])
    c = await store.history.add(user_id=user, prompt="not a favorite", seed=9, images=[_png(out / "c.png", "green")])
    d = await store.history.add(user_id=99, prompt="someone else", seed=3, images=[_png(out / "d.png", "black")])
    for g, who in ((a, user), (b, user), (d, 99)):
        assert await store.history.set_favorite(g, who)
    await store.tags.set_tags(a, [["fox", "snow"], []])
    return [a, b, c, d]


async def test_kohya_dir_has_images_captions_and_metadata(open_store, tmp_path) -> None:
    store = await open_store()
    a, b, c, _ = await _fill(store, tmp_path)
    items = await export.collect(store, 7)
    assert [i.name for i in items] == [f"{a}-0", f"{a}-1", f"{b}-0"]
    out = tmp_path / "ds"
    assert export.write_dir(items, "kohya", out) == 3
    folder = out / export.KOHYA_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{a}-0.png", f"{a}-0.txt", f"{a}-1.png", f"{a}-1.txt", f"{b}-0.png", f"{b}-0.txt"]
    )
    assert (folder / f"{a}-0.txt").read_text() == "fox, snow"  # auto-tags win
    assert (folder / f"{a}-1.txt").read_text() == "a red fox"  # an untagged image: the prompt
    assert Image.open(folder / f"{b}-0.png").getpixel((0, 0)) == (0, 0, 255)
    lines = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [x["file_name"] for x in lines] == [f"{export.KOHYA_FOLDER}/{a}-0.png", f"{export.KOHYA_FOLDER}/{a}-1.png",
                                               f"{export.KOHYA_FOLDER}/{b}-0.png"]  # fmt: skip
    assert lines[1]["seed"] == 2 and lines[0]["tags"] == ["fox", "snow"] and lines[2]["prompt"] == "a blue owl"
    with pytest.raises(UserError, match="already holds an export"):
        export.write_dir(items, "kohya", out)


async def test_jsonl_layout_all_and_errors(open_store, tmp_path) -> None:
    store = await open_store()
    a, b, c, _ = await _fill(store, tmp_path)
    everything = await export.collect(store, 7, favorites=False)
    assert {i.meta["generation_id"] for i in everything} == {a, b, c}
    out = tmp_path / "j"
    export.write_dir(everything, "jsonl", out)
    meta = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert meta[0]["file_name"] == f"{a}-0.png" and meta[0]["text"] == "fox, snow"
    assert (out / f"{c}-0.txt").read_text() == "not a favorite"
    with pytest.raises(UserError, match="no favorites"):
        await export.collect(store, 12345)
    with pytest.raises(UserError, match="unknown export format"):
        export.write_dir(everything, "csv", tmp_path / "x")  # type: ignore[arg-type]


async def test_zips_split_under_the_limit_or_refuse(open_store, tmp_path) -> None:
    store = await open_store()
    out = tmp_path / "outputs"
    ids = [
        await store.history.add(user_id=3, prompt=f"noise {i}", seed=i, images=[_png(out / f"n{i}.png", "red", 96)])
        for i in range(4)
    ]
    for g in ids:
        await store.history.set_favorite(g, 3)
    items = await export.collect(store, 3)
    one = max(i.source.stat().st_size for i in items)
    limit = 2 * one + 20_000
    parts = export.zip_parts(items, "kohya", limit)
    assert len(parts) == 2 and all(len(p) <= limit for p in parts)
    names = []
    for p in parts:
        z = zipfile.ZipFile(io.BytesIO(p))
        assert "metadata.jsonl" in z.namelist()
        names += [n for n in z.namelist() if n.endswith(".png")]
        for n in z.namelist():
            if n.endswith(".png"):
                assert n.replace(".png", ".txt") in z.namelist()
    assert len(names) == 4
    assert len(export.zip_parts(items, "jsonl", 10 * 1024 * 1024)) == 1
    with pytest.raises(UserError, match="more than 1 zips"):
        export.zip_parts(items, "kohya", limit, max_parts=1)
    with pytest.raises(UserError, match="alone is over"):
        export.zip_parts(items, "kohya", one // 2)


async def test_cli_export_writes_the_dataset(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"paths": {"data_dir": str(data)}, "metrics": {"enabled": False}}))
    store = await Store.open(data / "atelier.db")
    try:
        a, *_ = await _fill(store, tmp_path)
    finally:
        await store.close()
    from engine.config import load_settings

    assert load_settings(str(cfg)).path("db") == data / "atelier.db"
    out = tmp_path / "kohya"
    import asyncio

    code = await asyncio.to_thread(main, ["--config", str(cfg), "export", "--favorites", "--user", "7",
                                          "--format", "kohya", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "3 image(s)" in capsys.readouterr().out
    assert (out / export.KOHYA_FOLDER / f"{a}-0.txt").read_text() == "fox, snow"
    code = await asyncio.to_thread(main, ["--config", str(cfg), "export", "--user", "555", str(tmp_path / "e")])
    assert code == 2 and "no favorites" in capsys.readouterr().err


async def test_relative_image_paths_are_under_outputs(open_store, tmp_path) -> None:
    store = await open_store()
    out = tmp_path / "outputs"
    _png(out / "day" / "1-0.png", "white")
    g = await store.history.add(user_id=5, prompt="rel", seed=1, images=["day/1-0.png"])
    await store.history.set_favorite(g, 5)
    with pytest.raises(UserError, match="no favorites"):
        await export.collect(store, 5)  # no outputs folder given: the relative file is not found
    [item] = await export.collect(store, 5, outputs=out)
    assert item.source == out / "day" / "1-0.png"
