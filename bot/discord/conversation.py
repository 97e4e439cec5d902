"""Natural-language turns: who is talking to the bot, the reply chain, images, and delivering the answer."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from typing import Any

import discord

from bot import intents
from bot.discord import blend_reply, render, replies
from bot.discord.target import Target
from bot.usecases.agent import AgentOutput, Attachment, TurnSpec, run_agent
from bot.usecases.errors import UserError
from engine.config import Images
from engine.core import Engine
from engine.jobs.result import JobResult
from tools import uploads

log = logging.getLogger(__name__)
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_CUSTOM_ID = re.compile(r"^atelier:[a-z]+:([0-9]+)")
MAX_FIXES = 5
NO_TEXT = (
    "I got an empty message. Without the message-content intent Discord only shares text that mentions me:"
    " @mention me (or keep the reply ping on) and ask again."
)


def addressed(bot: Any, message: discord.Message) -> bool:
    """True for a DM, an @mention of the bot, or a reply to one of the bot's messages."""
    if message.author.bot or bot.user is None:
        return False
    if message.guild is None or bot.user in message.mentions:
        return True
    ref = message.reference
    resolved = ref.resolved if ref is not None else None
    return isinstance(resolved, discord.Message) and resolved.author.id == bot.user.id


def clean(text: str, bot_id: int) -> str:
    """The message text without the bot's mention."""
    return re.sub(rf"<@!?{bot_id}>", "", text).strip()


async def _referenced(message: discord.Message) -> discord.Message | None:
    ref = message.reference
    if ref is None or ref.message_id is None:
        return None
    if isinstance(ref.resolved, discord.Message):
        return ref.resolved
    with contextlib.suppress(discord.HTTPException):
        return await message.channel.fetch_message(ref.message_id)
    return None


async def reply_chain(message: discord.Message, limit: int) -> list[discord.Message]:
    """The messages this one replies to, oldest first (at most `limit`)."""
    chain: list[discord.Message] = []
    current = message
    while len(chain) < limit:
        parent = await _referenced(current)
        if parent is None:
            break
        chain.append(parent)
        current = parent
    return chain[::-1]


def _is_image(a: discord.Attachment) -> bool:
    return (a.content_type or "").startswith("image/") or a.filename.lower().endswith(IMAGE_EXT)


async def read_images(
    messages: list[discord.Message], images: Images, *, own: discord.Message | None = None
) -> list[Attachment]:
    """Image attachments of the first message that has any, downloaded and checked at the door.

    Every file of `own` (the user's own message) must be an image; other messages contribute their images.
    A bad file raises RejectedUpload naming it and the limits (size checked before the download).
    """
    for m in messages:
        found = [a for a in m.attachments if m is own or _is_image(a)]
        if not found:
            continue
        for a in found[:4]:
            if a.size > images.max_input_bytes:
                raise uploads.too_large(images, a.filename, a.size)
        files = [Attachment(a.filename, await a.read(), a.content_type or "") for a in found[:4]]
        return await uploads.check_uploads(images, files)
    return []


async def generation_of(engine: Engine, message: discord.Message | None) -> int | None:
    """The generation id behind one of the bot's result messages (from its button custom_ids)."""
    if message is None:
        return None
    for row in message.components:
        for child in getattr(row, "children", []):
            m = _CUSTOM_ID.match(getattr(child, "custom_id", None) or "")
            if m and not child.custom_id.startswith("atelier:fix:"):
                job = await engine.jobs.get(int(m.group(1)))
                result = JobResult.of(job) if job is not None else None
                return result.generation_id if result is not None else None
            if m:
                return int(m.group(1)) or None
    return None


def image_intent(text: str) -> Any:
    """The image-job intent of a request ("use this pose", "zoom out", ...), or None (critique or chat)."""
    return intents.detect(text) if text else None


async def image_source(
    engine: Engine, message: discord.Message, chain: list[discord.Message], images: Images
) -> tuple[list[Attachment], int | None]:
    """The picture an image-job request is about: its own upload, else the nearest one up the reply chain.

    A bot result counts as its generation id (full resolution, no re-upload); anything else as its bytes.
    """
    if own := await read_images([message], images, own=message):
        return own, None
    for m in reversed(chain):
        if (gen := await generation_of(engine, m)) is not None:
            return [], gen
        if found := await read_images([m], images):
            return found, None
    return [], None


async def build_turn(bot: Any, message: discord.Message) -> TurnSpec:
    """A TurnSpec from a message: the reply chain as conversation, images from it or the replied-to one.

    Requests such as "use this pose" or "zoom out" get the replied picture as the turn's image source;
    other turns see the message's or the replied message's images (critique, chat).
    """
    settings = bot.services.settings
    chain = await reply_chain(message, settings.agent.history_turns)
    me = bot.user.id
    text = clean(message.content, me)
    conv = [
        {
            "role": "assistant" if m.author.id == me else "user",
            "author": m.author.display_name,
            "content": clean(m.content, me),
        }
        for m in chain
        if m.content
    ]
    if image_intent(text) is not None:
        images, gen = await image_source(bot.services, message, chain, settings.images)
    else:
        images = await read_images([message, *(chain[::-1])][:2], settings.images, own=message)
        gen = await generation_of(bot.services, chain[-1] if chain else None)
    return TurnSpec(
        text=text,
        user_id=message.author.id,
        guild_id=message.guild.id if message.guild else 0,
        channel_id=message.channel.id,
        conversation=conv,
        attachments=images,
        replied_generation_id=gen,
        roles=replies.role_ids(message.author),
        reply_to={"message_id": message.id, "channel_id": message.channel.id},
    )


async def _agent_files(engine: Engine, out: AgentOutput, limit: int) -> list[discord.File]:
    """The agent's images, minus those of its finished jobs (the poster sends those with buttons)."""
    posted: set[str] = set()
    for job_id in out.job_ids:
        job = await engine.jobs.get(job_id)
        result = JobResult.of(job) if job is not None else None
        if result is not None:
            posted |= set(result.images)
    paths = [p for p in out.images if str(p) not in posted]

    def load() -> list[discord.File]:
        files = []
        for p in paths[:10]:
            data, name = render.fit_upload(p.read_bytes(), limit, p.name)
            files.append(discord.File(io.BytesIO(data), filename=name))
        return files

    return await asyncio.to_thread(load) if paths else []


def reply_parts(out: AgentOutput, limit: int) -> list[str]:
    """The agent's text (plus numbered suggestions) split into Discord-sized messages."""
    text = out.text.strip() or ("Done." if out.job_ids or out.images else "…")
    if out.followups:
        text += "\n\n" + render.followups_text(out.followups, MAX_FIXES)
    return render.split_text(text, limit)


async def deliver(
    bot: Any, message: discord.Message, out: AgentOutput, generation_id: int | None
) -> None:
    """Reply with the agent's text (split), its images and fix buttons; track any jobs it started."""
    settings = bot.services.settings
    parts = reply_parts(out, settings.discord.max_message_chars)
    files = await _agent_files(bot.services, out, settings.images.upload_limit_bytes)
    anchor: discord.Message = message
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        kw: dict[str, Any] = {"files": files} if last and files else {}
        if last and (v := fix_view(generation_id, len(out.followups))):
            kw["view"] = v
        anchor = await anchor.reply(part, mention_author=False, **kw)
    for job_id in out.job_ids:
        msg = await message.reply(f"⏳ Job #{job_id} queued…", mention_author=False)
        await bot.poster.track(job_id, Target(message.author.id, message.channel, message=msg))


async def handle_message(bot: Any, message: discord.Message) -> None:
    """Run one natural-language turn for a message addressed to the bot."""
    if not clean(message.content, bot.user.id) and not message.attachments:
        await message.reply(NO_TEXT, mention_author=False)
        return
    try:
        async with message.channel.typing():
            spec = await build_turn(bot, message)
            if await blend_reply.maybe_blend(bot, message, spec):
                return
            out = await run_agent(bot.agent, spec)
    except Exception as e:  # noqa: BLE001 - the user always gets an answer; unexpected errors are logged
        await message.reply(replies.error_text(e), mention_author=False)
        return
    gen = spec.replied_generation_id if spec.attachments or spec.replied_generation_id else None
    await deliver(bot, message, out, gen)


async def apply_fix(interaction: discord.Interaction, generation_id: int, index: int) -> None:
    """Fix button: run the agent on suggestion `index` of the critique the button sits under."""
    bot: Any = interaction.client
    await interaction.response.defer(thinking=True)
    msg = interaction.message
    fix = render.parse_followup(msg.content if msg else "", index)
    if fix is None:
        raise UserError(f"suggestion {index} is no longer on this message")
    settings = bot.services.settings
    source = await _referenced(msg) if msg is not None else None
    images = [] if generation_id else await read_images([source] if source else [], settings.images)
    spec = TurnSpec(
        text=f"Apply this suggestion to the image: {fix}",
        user_id=interaction.user.id,
        guild_id=interaction.guild_id or 0,
        channel_id=interaction.channel_id or 0,
        attachments=images,
        replied_generation_id=generation_id or None,
        roles=replies.role_ids(interaction.user),
        reply_to={"message_id": msg.id if msg else None},
    )
    out = await run_agent(bot.agent, spec)
    parts = reply_parts(out, settings.discord.max_message_chars)
    await interaction.edit_original_response(content=parts[0])
    for part in parts[1:]:
        await interaction.followup.send(part)
    for job_id in out.job_ids:
        target = Target(interaction.user.id, interaction.channel, label=f"Fix {index}")
        target.message = await interaction.followup.send(f"⏳ Job #{job_id} queued…", wait=True)
        await bot.poster.track(job_id, target)


class FixButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:fix:(?P<gen>[0-9]+):(?P<i>[0-9]+)"):
    """Apply suggestion i of a critique (of generation `gen`, 0 = an uploaded image)."""

    def __init__(self, generation_id: int, index: int):
        self.generation_id, self.index = generation_id, index
        cid = f"atelier:fix:{generation_id}:{index}"
        super().__init__(discord.ui.Button(label=f"Fix {index}", style=discord.ButtonStyle.primary, custom_id=cid))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> FixButton:
        return cls(int(match["gen"]), int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        await replies.guarded(interaction, apply_fix(interaction, self.generation_id, self.index))


def fix_view(generation_id: int | None, n_fixes: int) -> discord.ui.View | None:
    """Buttons for up to MAX_FIXES suggestions of a critique."""
    if n_fixes <= 0:
        return None
    view = discord.ui.View(timeout=None)
    for i in range(1, min(n_fixes, MAX_FIXES) + 1):
        view.add_item(FixButton(generation_id or 0, i))
    return view
