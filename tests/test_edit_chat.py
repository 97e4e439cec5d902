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
