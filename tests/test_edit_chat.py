"""The terminal's `^ make it night` on the demo stack (real SmolLM2 agent, tiny SD, tiny Kontext): an edit."""

from __future__ import annotations

from pathlib import Path

from bot.app import App
from bot.chat import TerminalChat
from engine.config import Gpu, Paths, Settings
from engine.runtime.diffusion import read_png_meta


async def test_caret_reply_with_an_instruction_runs_an_edit_of_the_last_image(
    tmp_path: Path, tiny_models_dir
):
    settings = Settings(
        paths=Paths(data_dir=str(tmp_path), demo_models=str(tiny_models_dir)), gpu=Gpu(device="cpu")
    )
    app = await App.start(settings, demo=True)
    try:
        chat = TerminalChat(app.engine, app.agent, job_timeout_s=300)
        first = await chat.turn("draw a lighthouse on a cliff")
        assert first["jobs"] and first["jobs"][0]["state"] == "done", first
        parent = first["jobs"][0]["generation_id"]
        out = await chat.turn("^ make it night")
        call = out["tool_calls"][0]
        assert call["name"] == "generate" and call["args"]["edit"] is True, out
        assert call["result"]["mode"] == "edit" and call["result"]["based_on"] == parent
        (job,) = out["jobs"]
        assert job["state"] == "done", job
        meta = read_png_meta(job["images"][0])["atelier"]
        assert (meta["preset"], meta["parent_id"]) == ("demo-edit", parent)
        assert "night" in meta["params"]["edit"]
    finally:
        await app.stop()


async def test_two_attached_images_and_an_instruction_run_one_edit_with_both_in_order(
    tmp_path: Path, tiny_models_dir, monkeypatch
):
    from PIL import Image

    from engine.config import Generation
    from engine.runtime.diffusion.pipeline import DiffusionModel

    centres: list[list[tuple[int, ...]]] = []
    real = DiffusionModel._call_pipeline

    def spy(self, pipe, kwargs):
        images = kwargs.get("image")
        centres.append([im.convert("RGB").getpixel((im.width // 2, im.height // 2)) for im in images or []])
        return real(self, pipe, kwargs)

    monkeypatch.setattr(DiffusionModel, "_call_pipeline", spy)
    mug, logo = tmp_path / "mug.png", tmp_path / "logo.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(mug)
    Image.new("RGB", (64, 64), (20, 20, 220)).save(logo)
    settings = Settings(
        paths=Paths(data_dir=str(tmp_path), demo_models=str(tiny_models_dir)), gpu=Gpu(device="cpu"),
        generation=Generation(edit_preset="demo-klein"),
    )  # fmt: skip
    app = await App.start(settings, demo=True)
    try:
        chat = TerminalChat(app.engine, app.agent, job_timeout_s=300)
        out = await chat.turn("put this logo on the mug", attach=[str(mug), str(logo)])
        call = out["tool_calls"][0]
        assert call["name"] == "generate" and call["args"]["edit"] is True, out
        (job,) = out["jobs"]
        assert job["state"] == "done", job
        assert centres == [[(200, 40, 40), (20, 20, 220)]]  # one edit, both images, in the order attached
        meta = read_png_meta(job["images"][0])["atelier"]
        assert meta["preset"] == "demo-klein" and "logo" in meta["params"]["edit"]
    finally:
        await app.stop()
