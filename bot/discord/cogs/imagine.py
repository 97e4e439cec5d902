"""/imagine: defer at once, validate, enqueue, then the progress poster owns the message."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.cogs import BotCog
from bot.discord.items import submit_tracked
from bot.discord.options import Aspect, Code, ControlType, Preset, Prompt, ReferenceMode, Seed, Style
from bot.usecases import account, guided
from engine.runtime.diffusion.request import NEGATIVE_MAX_CHARS


class Imagine(BotCog):
    @app_commands.command(name="imagine", description="Draw images from a prompt")
    @app_commands.describe(
        prompt="what to draw", preset="model preset (default: yours or the server's)",
        style="a style from /style list", aspect="image shape", count="how many images (1-4)",
        seed="seed for reproducible results", negative="what to avoid", image="start from this image (img2img)",
        control_image="follow the pose, edges or depth of this image (ControlNet)",
        control_type="what to take from control_image (default: canny edges)",
        control_scale="how strictly to follow control_image (0-2, default 1)",
        reference_image="reuse the subject or style of this image (IP-Adapter)",
        reference_mode="take the subject or the style of reference_image (default: subject)",
        reference_scale="how strongly to follow reference_image (0-1.5, default 0.6)",
        best_of="draw this many (2-4) and post the best by CLIP score first, the others one click away",
        draft="a fast draft preview (Enhance it to full quality with the ✨ buttons)",
        style_code="a shared style code (X7K2) from /stylecode: its style or preset",
    )  # fmt: skip
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        preset: Preset | None = None,
        style: Style | None = None,
        aspect: Aspect | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        seed: Seed | None = None,
        negative: app_commands.Range[str, 0, NEGATIVE_MAX_CHARS] | None = None,
        image: discord.Attachment | None = None,
        control_image: discord.Attachment | None = None,
        control_type: ControlType | None = None,
        control_scale: app_commands.Range[float, 0.0, 2.0] | None = None,
        reference_image: discord.Attachment | None = None,
        reference_mode: ReferenceMode | None = None,
        reference_scale: app_commands.Range[float, 0.0, 1.5] | None = None,
        best_of: app_commands.Range[int, 2, 4] | None = None,
        draft: bool | None = None,
        style_code: Code | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        services = self.bot.services
        extra = await guided.imagine_fields(services, guided.Guides(
            control_image=control_image, control_type=control_type, control_scale=control_scale,
            reference_image=reference_image, reference_mode=reference_mode, reference_scale=reference_scale,
        ))  # fmt: skip
        init = await guided.save_image(services, "image", image) if image is not None else None
        uid, gid = interaction.user.id, interaction.guild_id or 0
        payload = await account.imagine_payload(
            services, user_id=uid, guild_id=gid, prompt=prompt, preset=preset, style=style,
            aspect=aspect, count=count, seed=seed, negative=negative, init_image=init, draft=draft,
            style_code=style_code, best_of=best_of,
        )  # fmt: skip
        await submit_tracked(interaction, "generate", payload | extra)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Imagine(bot))
