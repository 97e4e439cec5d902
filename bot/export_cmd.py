"""`atelier export --favorites --user ID --format kohya|jsonl DIR`: a training dataset from a user's images."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from engine.config import Settings


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """Register the `export` subcommand."""
    p = sub.add_parser(
        "export",
        help="write a user's favorite images as a dataset (images, captions, metadata.jsonl)",
        description="Captions are the images' auto-tags when they have some, else the prompts."
        " kohya: DIR/10_atelier/<id>.png + .txt; jsonl: DIR/<id>.png + .txt, metadata.jsonl with file_name/text.",
    )
    p.add_argument("dir", metavar="DIR", help="output folder (created; must not hold an export already)")
    p.add_argument("--user", type=int, required=True, help="the Discord user id whose images to export")
    p.add_argument("--format", choices=["kohya", "jsonl"], default="kohya", help="dataset layout")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--favorites", action="store_true", default=True, help="only favorites (default)")
    which.add_argument("--all", action="store_true", help="every generation of the user")


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from bot.usecases import export
    from engine.store import open_store

    store = await open_store(settings)
    try:
        items = await export.collect(store, args.user, favorites=not args.all, outputs=settings.path("outputs"))
        n = await asyncio.to_thread(export.write_dir, items, args.format, Path(args.dir))
    finally:
        await store.close()
    print(f"atelier export: {n} image(s) with captions and metadata.jsonl written to {args.dir}")
    return 0


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point for `atelier export`."""
    return asyncio.run(_export(settings, args))
