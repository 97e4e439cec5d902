"""The `atelier` command: run (Discord), chat (terminal), worker (scale-out), db (maintenance)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

from engine.config import ConfigError, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atelier",
        description="Atelier: a creative assistant that hears, sees, draws, critiques and remembers.",
    )
    p.add_argument("--config", metavar="PATH", help="config file (default: $ATELIER_CONFIG or ./config.json)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="start the Discord bot (needs DISCORD_TOKEN)")
    run.add_argument("--demo", action="store_true", help="use the offline test models")

    chat = sub.add_parser("chat", help="talk to Atelier in the terminal")
    chat.add_argument("--demo", action="store_true", help="offline test models (images are noise)")
    chat.add_argument("--json", action="store_true", help="one request per stdin line, one JSON object out")

    worker = sub.add_parser("worker", help="consume generation jobs from the shared queue")
    worker.add_argument("--demo", action="store_true", help="use the offline test models")

    db = sub.add_parser("db", help="inspect and maintain the SQLite store")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dbsub.add_parser("stats", help="counts, sizes and schema version (JSON)")
    dbsub.add_parser("migrate", help="apply pending migrations and seed the shipped library")
    dbsub.add_parser("check", help="run PRAGMA integrity_check")
    search = dbsub.add_parser("search", help="search one user's history")
    search.add_argument("query")
    search.add_argument("--user", type=int, required=True)
    search.add_argument("--guild", type=int, default=0)
    search.add_argument("--limit", type=int, default=10)
    return p


async def _db(settings: Settings, args: argparse.Namespace) -> int:
    from engine.store import open_store
    from engine.store.history import HistoryQueryError, Scope

    store = await open_store(settings)
    try:
        if args.db_command in ("stats", "migrate"):
            print(json.dumps(await store.stats(), indent=2))
        elif args.db_command == "check":
            rows = await store.db.fetchall("PRAGMA integrity_check")
            result = [r[0] for r in rows]
            print("\n".join(result))
            return 0 if result == ["ok"] else 1
        elif args.db_command == "search":
            scope = Scope(args.user, args.guild, include_guild=bool(args.guild))
            try:
                page = await store.history.search(args.query, scope, limit=args.limit)
            except HistoryQueryError as e:
                print(f"atelier: {e}", file=sys.stderr)
                return 2
            for g in page.items:
                print(json.dumps({"id": g.id, "prompt": g.prompt, "seed": g.seed, "preset": g.preset}))
        return 0
    finally:
        await store.close()


def _not_yet(name: str) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        print(f"atelier {name}: not available in this build yet", file=sys.stderr)
        return 2

    return run


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "db": lambda settings, args: asyncio.run(_db(settings, args)),
    "run": _not_yet("run"),
    "chat": _not_yet("chat"),
    "worker": _not_yet("worker"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"atelier: configuration error\n{e}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
