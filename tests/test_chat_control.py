"""Terminal /imagine --control/--reference, /zoom, /pan and /control against a real store and a fake engine."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from bot.chat import HELP, TerminalChat
from bot.chat_commands import parse_imagine
from bot.usecases.errors import UserError
from engine.jobs.payloads import GeneratePayload
from engine.runtime.managed import ModelNotAvailable
from tests.agent_support import make_settings, seed_env, write_png

USER = 1


class FakeEngine:
    """The engine.core.Engine calls TerminalChat uses: submit, wait, control_preview (+ store, settings)."""

    def __init__(self, env) -> None:
        self.store, self.jobs, self.settings = env.store, env.jobs, env.settings
        self.runner = SimpleNamespace(concurrency=1)  # the job-queued line's queue ETA reads it
        self.payloads: list[dict] = []
        self.previews: list[tuple[str, tuple[int, int]]] = []
        self.preview_error: Exception | None = None

    async def submit(self, kind: str, payload: dict, *, user_id: int, **_: object) -> int:
        GeneratePayload.model_validate(payload)
        self.payloads.append(payload)
        return await self.jobs.enqueue(user_id, 0, 0, kind, payload)

    async def wait(self, job_id: int, timeout_s: float = 300.0):
        job = await self.jobs.claim("fake")
        assert job is not None and job.id == job_id
        path = write_png(self.settings.path("outputs") / f"jobs/{job_id}.png", (90, 90, 9), size=40)
        gen_id = await self.store.history.add(
            user_id=job.user_id, guild_id=0, prompt=job.payload["prompt"], seed=1, images=[str(path)],
            params={"user_prompt": job.payload["prompt"]},
        )  # fmt: skip
        result = {"generation_id": gen_id, "images": [str(path)], "seeds": [1], "spoilers": [False]}
        await self.jobs.finish(job_id, result, "fake")
        return await self.jobs.get(job_id)

    async def control_preview(self, kind: str, image: Image.Image) -> Image.Image:
        if self.preview_error is not None:
            raise self.preview_error
        self.previews.append((kind, image.size))
        return image.convert("L")


@pytest.fixture
async def chat(open_store, tmp_path):
    env = await seed_env(await open_store(), make_settings(tmp_path))
    return TerminalChat(FakeEngine(env), agent=None, user_id=USER)


async def attach_png(tmp_path: Path, chat: TerminalChat, size=(30, 20)) -> None:
    path = tmp_path / "in.png"
    Image.new("RGB", size, (1, 2, 3)).save(path)
    await chat.attach(str(path))


def test_parse_imagine_options():
    args = parse_imagine("a robot --control pose --control=depth dancing --reference style")
    assert (args.prompt, args.control, args.reference) == ("a robot dancing", ["openpose", "depth"], "style")
    assert parse_imagine("a cat --reference").reference == "subject"
    assert parse_imagine("a cat's hat").prompt == "a cat's hat"
    for bad, msg in [
        ("x --control", "--control needs a type"),
        ("x --control wings", "unknown control type 'wings'"),
        ("x --control canny --control edges", "--control canny is given more than once"),
        ("x --control canny --control depth --control pose --control lines", "at most 3"),
        ("x --reference=look", "--reference takes subject or style"),
        ("x --seed 5", "unknown option --seed"),
    ]:
        with pytest.raises(UserError, match=msg):
            parse_imagine(bad)


async def test_imagine_with_control_and_reference_uses_the_attached_image(chat, tmp_path):
    with pytest.raises(UserError, match="/attach PATH first"):
        await chat.command("/imagine a robot --control pose")
    await attach_png(tmp_path, chat)
    out = await chat.command("/imagine a robot --control pose --reference style")
    payload = chat.engine.payloads[-1]
    path = payload["controls"][0]["image"]
    assert payload["controls"] == [{"type": "openpose", "image": path}]
    assert payload["reference_image"] == path and payload["reference_mode"] == "style"
    assert Image.open(path).size == (30, 20) and Path(out).is_file()
    assert chat.pending == []  # the attachment was used
    await chat.command("/imagine a plain robot")
    assert "controls" not in chat.engine.payloads[-1]


async def test_zoom_and_pan_extend_the_last_image(chat):
    with pytest.raises(UserError, match="no image to extend yet"):
        await chat.command("/zoom")
    await chat.command("/imagine a lighthouse")
    first = chat.last_generation
    await chat.command("/zoom")
    assert chat.engine.payloads[-1] == {
        "prompt": "a lighthouse",
        "source_generation_id": first,
        "outpaint": {"direction": "all", "factor": 2.0},
    }
    second = chat.last_generation
    assert second != first
    await chat.command("/pan left 1.25")
    assert chat.engine.payloads[-1]["outpaint"] == {"direction": "left", "factor": 1.25}
    assert chat.engine.payloads[-1]["source_generation_id"] == second  # the newest image
    await chat.command("/pan UP")
    assert chat.engine.payloads[-1]["outpaint"] == {"direction": "up", "factor": 1.5}
    await chat.command("/zoom 3x")
    assert chat.engine.payloads[-1]["outpaint"]["factor"] == 3.0
    for bad, msg in [
        ("/zoom 9", "between 1.1 and 4"),
        ("/zoom lots", "must be a number"),
        ("/pan sideways", "usage: /pan"),
        ("/pan", "usage: /pan"),
        ("/pan left 1.0", "between 1.1 and 4"),
    ]:
        with pytest.raises(UserError, match=msg):
            await chat.command(bad)


async def test_control_shows_the_map_of_the_attached_or_last_image(chat, tmp_path):
    with pytest.raises(UserError, match="no image to read"):
        await chat.command("/control canny")
    await attach_png(tmp_path, chat, size=(24, 16))
    out = Path(await chat.command("/control pose"))
    assert out.is_file() and out.parent == chat.engine.settings.path("outputs") / "control"
    assert Image.open(out).mode == "L" and chat.engine.previews == [("openpose", (24, 16))]
    assert len(chat.pending) == 1  # still attached for the next /imagine
    chat.pending = []
    await chat.command("/imagine a fox")
    await chat.command("/control depth")
    assert chat.engine.previews[-1] == ("depth", (40, 40))
    with pytest.raises(UserError, match="unknown control type 'wings'"):
        await chat.command("/control wings")
    with pytest.raises(UserError, match="usage: /control"):
        await chat.command("/control")
    chat.engine.preview_error = ModelNotAvailable("openpose needs lllyasviel/Annotators (offline)")
    with pytest.raises(UserError, match="Annotators"):
        await chat.command("/control openpose")


def test_help_lists_the_new_commands():
    for cmd in ("/zoom", "/pan", "/control", "--control", "--reference"):
        assert cmd in HELP
