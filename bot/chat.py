"""`atelier chat`: the same agent in a terminal, interactive or one JSON request per stdin line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bot import chat_commands as cc
from bot import chat_creation, chat_quality, chat_settings, chat_style_codes, chat_variations
from bot.agent import Agent
from bot.conversation import ChatLine, Turn
from bot.usecases import account, guided, jobs, library
from bot.usecases.errors import UserError
from bot.usecases.quality import queued_text, ranked_images, result_notes
from engine.config import Settings
from engine.core import Engine
from engine.jobs.result import JobResult
from tools import uploads
from tools.context import Attachment

DEMO_BANNER = (
    "Atelier demo mode: offline test models. The LLM is SmolLM2-135M (tiny and easily confused) and the images\n"
    "are noise from an untrained, random-weight network. Real presets need real models (see README)."
)
HELP = """Talk in plain language ("a lighthouse in watercolor, moody"). Start a line with ^ to reply to your
last image ("^ darker"). Commands:
  /imagine PROMPT      queue a generation directly (no LLM); with an /attach'ed image add
                       --control TYPE (canny, depth, openpose, lineart, softedge, scribble; up to 3)
                       and/or --reference [style|subject]; --draft for a fast preview;
                       --style-code CODE to use a shared style code; --best-of N (2-4) draws N,
                       best first by CLIP score
  /attach PATH         attach an image to your next message (or /imagine, /control)
  /zoom [FACTOR]       zoom out of your last image (default 2x, 1.1 to 4)
  /pan DIR [FACTOR]    extend your last image left, right, up or down (default 1.5x)
  /control TYPE        show the control map (pose, edges, depth...) of the attached or last image
  /styles  /presets    list the library
  /history QUERY       search your history
  /queue               your queued and running jobs
  /cancel [JOB]        cancel a job (default: your newest)
  /help  /quit"""
TERMINAL_USER = 1
KEEP_LINES = 12


class TerminalChat:
    """One terminal user talking to the agent; images are files under the outputs folder."""

    def __init__(
        self, engine: Engine, agent: Agent, *, user_id: int = TERMINAL_USER, job_timeout_s: float = 600
    ):
        self.engine = engine
        self.agent = agent
        self.user_id = user_id
        self.job_timeout_s = job_timeout_s
        self.lines: list[ChatLine] = []
        self.pending: list[Attachment] = []
        self.last_generation: int | None = None
        self.last_image: str | None = None
        self.notify: Callable[[str], None] | None = None  # prints lines as they happen (the interactive loop)

    async def turn(self, text: str, *, reply_to: int | None = None, attach: list[str] = ()) -> dict[str, Any]:
        """Run the agent on one message, wait for the jobs it queued, and describe everything as a dict."""
        for path in attach:
            await self.attach(path)
        if text.startswith("^"):
            text, reply_to = text[1:].strip(), reply_to or self.last_generation
        turn = Turn(
            conversation=[*self.lines, ChatLine("you", text)], user_id=self.user_id,
            attachments=self.pending, replied_generation_id=reply_to,
        )  # fmt: skip
        self.pending = []
        result = await self.agent.run(turn)
        jobs = [await self._finish(job_id) for job_id in result.job_ids]
        self.lines = [*self.lines, ChatLine("you", text), ChatLine("atelier", result.reply or "", True)]
        self.lines = self.lines[-KEEP_LINES:]
        return {
            "reply": result.reply,
            "tool_calls": [
                {"name": c.name, "args": c.args, "result": c.result, "executed": c.executed}
                for c in result.tool_calls
            ],
            "job_ids": list(result.job_ids),
            "jobs": jobs,
            "images": [*result.images, *(p for j in jobs for p in j["images"])],
            "follow_ups": list(result.follow_ups),
            "stopped": result.stopped,
        }

    async def _finish(self, job_id: int) -> dict[str, Any]:
        queued = await queued_text(self.engine, job_id)
        if self.notify is not None:
            self.notify(queued)
        job = await self.engine.wait(job_id, self.job_timeout_s)
        res = JobResult.of(job)
        if res is not None:
            self.last_generation = res.generation_id
            self.last_image = res.images[0] if res.images else self.last_image
        return {
            "id": job.id, "state": job.state, "error": job.error, "queued": queued,
            "generation_id": res.generation_id if res is not None else None,
            "images": list(res.images) if res is not None else [], "seeds": list(res.seeds) if res is not None else [],
            "notes": result_notes(res.params) if res is not None else "",
            "ranked": ranked_images(res.images, res.params) if res is not None else [],
        }  # fmt: skip

    async def attach(self, path: str) -> str:
        """Check a file at the door (decoded, within the limits) and keep it for the next message."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"no such file: {p}")
        images = self.engine.settings.images
        if p.stat().st_size > images.max_input_bytes:
            raise UserError(str(uploads.too_large(images, p.name, p.stat().st_size)))
        att = Attachment(name=p.name, data=await asyncio.to_thread(p.read_bytes))
        try:
            (att,) = await uploads.check_uploads(images, [att])
        except uploads.RejectedUpload as e:
            raise UserError(str(e)) from None
        self.pending.append(att)
        return f"attached {p.name} ({len(att.data)} bytes) to your next message"

    async def command(self, line: str) -> str:
        """Run one /command and return the text to show."""
        name, _, arg = line[1:].partition(" ")
        arg, uid = arg.strip(), self.user_id
        if name == "help":
            helps = (chat_creation.HELP, chat_quality.HELP, chat_variations.HELP, chat_style_codes.HELP,
                     chat_settings.HELP)  # fmt: skip
            return "\n".join((HELP, *helps))
        if name in chat_creation.COMMANDS:
            return await chat_creation.run(self, name, arg)
        if name in chat_quality.COMMANDS:
            return await chat_quality.run(self, name, arg)
        if name in chat_style_codes.COMMANDS:
            return await chat_style_codes.run(self, name, arg)
        if name in chat_variations.COMMANDS:
            return await chat_variations.run(self, name, arg)
        if name in chat_settings.COMMANDS:
            return await chat_settings.run(self, name, arg)
        if name == "attach":
            return await self.attach(arg)
        if name == "imagine":
            return await self._imagine(arg)
        if name in ("zoom", "pan"):
            direction, factor = (
                ("all", cc.parse_factor(arg, guided.ZOOM_FACTOR)) if name == "zoom" else cc.parse_pan(arg)
            )
            payload = await guided.outpaint_generation(self.engine, uid, self.last_generation, direction, factor)
            return await self._run(payload)
        if name == "control":
            source = self.pending[0].data if self.pending else self.last_image
            return await cc.control_map(self.engine, arg, source)
        if name == "styles":
            return await library.style_list(self.engine, 0)
        if name == "presets":
            return await library.preset_list(self.engine, uid, 0)
        if name == "history":
            return await account.history_search(self.engine, arg, uid, 0, False)
        if name == "queue":
            return await jobs.queue_text(self.engine, uid)
        if name == "cancel":
            return await jobs.cancel_text(self.engine, uid, int(arg) if arg.isdigit() else None)
        raise UserError(f"unknown command /{name}; try /help")

    async def _imagine(self, arg: str) -> str:
        """/imagine PROMPT [--control TYPE] [--reference MODE]: the options use the /attach'ed image."""
        args = cc.parse_imagine(arg)
        payload = await account.imagine_payload(
            self.engine, user_id=self.user_id, guild_id=0, prompt=args.prompt, draft=args.draft or None,
            style_code=args.style_code, best_of=args.best_of,
        )  # fmt: skip
        payload |= await cc.guided_fields(self.engine.settings, args, self.pending)
        if args.control or args.reference:
            self.pending = []
        return await self._run(payload)

    async def _run(self, payload: dict[str, Any]) -> str:
        """Queue a 'generate' job, wait for it, and say where its images are (best first for best-of)."""
        job_id = await self.engine.submit("generate", payload, user_id=self.user_id)
        job = await self._finish(job_id)
        shown = job["error"] or "\n".join(job["ranked"]) or f"job #{job_id}: {job['state']}"
        return f"{shown}\n{job['notes']}" if job["notes"] else shown


def _render(out: dict[str, Any]) -> str:
    parts = [out["reply"] or "(no reply)"]
    for job in out["jobs"]:
        if job["error"]:
            parts.append(f"job #{job['id']} {job['state']}: {job['error']}")
        parts += [f"  image: {p}" for p in job["ranked"]]
        parts += [f"  {job['notes']}"] if job.get("notes") else []
    if out["stopped"]:
        parts.append(f"(stopped: {out['stopped']})")
    if out["follow_ups"]:
        parts.append("try: " + " | ".join(out["follow_ups"]))
    return "\n".join(parts)


async def _lines(stream: TextIO):
    while True:
        line = await asyncio.to_thread(stream.readline)
        if not line:
            return
        yield line.rstrip("\n")


async def interactive(chat: TerminalChat, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """A prompt loop until /quit or end of input."""
    print("Atelier: type a request, /help for commands.", file=stdout, flush=True)
    chat.notify = lambda line: print(line, file=stdout, flush=True)
    while True:
        print("you> ", end="", file=stdout, flush=True)
        line = await asyncio.to_thread(stdin.readline)
        if not line or line.strip() in ("/quit", "/exit"):
            return
        text = line.strip()
        if not text:
            continue
        try:
            shown = await chat.command(text) if text.startswith("/") else _render(await chat.turn(text))
        except (UserError, ValueError, LookupError) as e:
            shown = f"error: {e}"
        print(shown, file=stdout, flush=True)


async def json_lines(chat: TerminalChat, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """One request per line (text, or {"text", "reply_to", "attach"}; /commands too); one JSON object out each."""
    failures, queued = 0, list[str]()
    chat.notify = queued.append  # a command's job-queued lines come back in its object's "queued" list
    async for raw in _lines(stdin):
        if not raw.strip():
            continue
        try:
            req = json.loads(raw) if raw.lstrip().startswith("{") else {"text": raw}
            if not isinstance(req, dict) or not isinstance(req.get("text"), str):
                raise UserError('each JSON line needs a "text" string')
            queued.clear()
            if req["text"].startswith("/"):
                out = {"command": req["text"], "output": await chat.command(req["text"])}
                out |= {"queued": list(queued)} if queued else {}
            else:
                out = await chat.turn(req["text"], reply_to=req.get("reply_to"), attach=req.get("attach", []))
        except (UserError, ValueError, LookupError) as e:
            failures += 1
            out = {"error": str(e)}
        print(json.dumps(out, default=str), file=stdout, flush=True)
    return 1 if failures else 0


async def run_chat(settings: Settings, *, demo: bool, as_json: bool) -> int:
    """Start the services and the agent, then talk until the input ends."""
    from bot.app import App

    if demo:
        print(DEMO_BANNER, file=sys.stderr, flush=True)
    app = await App.start(settings, demo=demo)
    try:
        chat = TerminalChat(app.engine, app.agent)
        if as_json:
            return await json_lines(chat)
        await interactive(chat)
        return 0
    finally:
        await app.stop()
