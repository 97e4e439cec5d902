"""The `atelier` command: run (Discord), chat (terminal), worker (scale-out), db, models, doctor, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

from bot.check_cmd import add_arguments as add_check_arguments
from bot.check_cmd import run_check
from bot.config_cmd import add_arguments as add_config_arguments
from bot.config_cmd import run_config
from bot.export_cmd import add_arguments as add_export_arguments
from bot.export_cmd import run_export
from bot.usecases.errors import UserError
from bot.web_cmd import add_arguments as add_web_arguments
from bot.web_cmd import run_keys, run_serve
from engine.config import ConfigError, Settings, load_settings


def _switches(parser: argparse.ArgumentParser, **helps: str) -> None:
    """Add on/off flags (--name, store_true) in order, each with its help."""
    for name, text in helps.items():
        parser.add_argument(f"--{name}", action="store_true", help=text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atelier",
        description="Atelier: a creative assistant that hears, sees, draws, critiques and remembers.",
    )
    p.add_argument("--config", metavar="PATH", help="config file (default: $ATELIER_CONFIG or ./config.json)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="start the Discord bot (needs DISCORD_TOKEN)")
    _switches(run, demo="use the offline test models", web="also serve the web front (web.host:web.port)")

    chat = sub.add_parser("chat", help="talk to Atelier in the terminal")
    _switches(
        chat, demo="offline test models (images are noise)", json="one request per stdin line, one JSON object out"
    )

    worker = sub.add_parser(
        "worker",
        help="consume generation jobs from the shared queue",
        description='Run GPU work for the bot from Redis (queue.backend = "redis"; queue.redis_url).'
        " Start one per GPU, on any number of machines; each has its own arbiter and models."
        " SIGTERM/Ctrl-C finishes running jobs first; a second one exits at once.",
    )
    _switches(worker, demo="build the offline test models before taking jobs")
    worker.add_argument("--id", help="worker id shown in /queue (default: HOST:PID)")
    worker.add_argument("--max-jobs", type=int, help="jobs held at once (default: queue.max_batch)")
    worker.add_argument(
        "--metrics-port", type=int, help="metrics/health port (default: metrics.port; 0 = any)"
    )
    _switches(worker, diagnostics="also run the 'noop' test op (tests and bench.queue)")
    worker.add_argument("--device", help="run on this device: cuda:N, cuda, cpu, cpu:N (a test label), mps")
    fleet = worker.add_mutually_exclusive_group()
    fleet.add_argument("--all-devices", action="store_true", help="one worker process per visible GPU")
    fleet.add_argument("--devices", metavar="A,B", help="one worker process per listed device")
    worker.add_argument(
        "--warm", action="append", metavar="PRESET", help="load this preset before taking jobs (repeatable)"
    )

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

    models = sub.add_parser("models", help="list, download or remove the presets' model files")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = msub.add_parser("list", help="every preset, its files, their sizes and whether they are here")
    _switches(ls, json="one JSON object", offline="do not ask the hub for sizes of missing files")
    for action, text in (
        ("pull", "download presets' files from the Hugging Face hub (resumable)"),
        ("rm", "delete presets' downloaded files and say how much was freed"),
    ):
        msub.add_parser(action, help=text).add_argument("names", nargs="+", metavar="NAME")

    gallery = sub.add_parser("gallery", help="print a single-use sign-in link to a user's web gallery")
    gallery.add_argument("--user", type=int, required=True, help="the Discord user id whose gallery to open")
    gallery.add_argument("--guild", type=int, default=0, help="the guild it is opened from (0 = none)")

    doctor = sub.add_parser("doctor", help="check this machine and the config before anything breaks")
    _switches(doctor, json="one JSON object")

    config = sub.add_parser(
        "config",
        help="explain every settings key, or show the effective settings",
        description="Every config.json key with its type, default and meaning (--explain),"
        " the settings in effect (--show), or the README's table of them (--readme).",
    )
    add_config_arguments(config)
    add_web_arguments(sub)
    add_export_arguments(sub)
    add_check_arguments(sub)
    return p


async def _db(settings: Settings, args: argparse.Namespace) -> int:
    from engine.store import open_store
    from engine.store.history import HistoryQueryError, Scope

    store = await open_store(settings)
    try:
        if args.db_command in ("stats", "migrate"):
            print(json.dumps(await store.stats(), indent=2))
        elif args.db_command == "check":
            result = await store.integrity()
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


async def _gallery(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier gallery --user ID`: a short-lived single-use login link (the same as /gallery in Discord)."""
    from bot.usecases import gallery
    from engine.core import Engine

    engine = await Engine.start(settings, worker=False)
    try:
        print(gallery.terminal_hint(await gallery.login_link(engine, args.user, args.guild)))
    finally:
        await engine.stop()
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier run`: the Discord bot; fails fast without DISCORD_TOKEN or a model."""
    token = settings.discord_token
    if not token:
        print(
            "atelier run: DISCORD_TOKEN is not set. Create a bot at https://discord.com/developers/applications,"
            " then `export DISCORD_TOKEN=...` (try `atelier chat --demo` to use Atelier without Discord)",
            file=sys.stderr,
        )
        return 2
    import discord

    from bot.discord.runtime import run_bot
    from engine.runtime.managed import ModelNotAvailable

    discord.utils.setup_logging()
    try:
        asyncio.run(run_bot(settings, token, demo=args.demo, web=args.web))
    except ModelNotAvailable as e:
        print(f"atelier run: a model is missing: {e}", file=sys.stderr)
        return 2
    except discord.LoginFailure:
        print(
            "atelier run: Discord rejected DISCORD_TOKEN (reset it in the developer portal)", file=sys.stderr
        )
        return 2
    except discord.PrivilegedIntentsRequired:
        print(
            "atelier run: discord.message_content_intent is on but the intent is not enabled for this bot"
            " in the developer portal",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier worker`: consume jobs from Redis until SIGTERM/SIGINT."""
    import logging

    from engine.remote.worker import QueueWorker

    if settings.queue.backend != "redis":
        print(
            'atelier worker: queue.backend is "local"; set it to "redis" (and queue.redis_url) in the'
            " config shared with the bot",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.all_devices or args.devices:
            from bot.worker_fleet import run_fleet

            return run_fleet(settings, args)
        worker = QueueWorker(
            settings, worker_id=args.id, max_jobs=args.max_jobs, diagnostics=args.diagnostics,
            demo=args.demo, metrics_port=args.metrics_port, device=args.device, warm=tuple(args.warm or ()),
        )  # fmt: skip
        asyncio.run(worker.run(ready=lambda w: print(f"atelier worker {w.id}: ready", flush=True)))
    except (ConnectionError, OSError, ValueError) as e:
        print(f"atelier worker: {e}", file=sys.stderr)
        return 2
    return 0


def _models(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier models list | pull | rm`."""
    from bot.models_cmd import run_models

    return run_models(settings, args)


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    """Terminal chat with the same agent (interactive, or --json lines)."""
    from bot.chat import run_chat
    from engine.runtime.managed import ModelNotAvailable

    try:
        return asyncio.run(run_chat(settings, demo=args.demo, as_json=args.json))
    except ModelNotAvailable as e:
        print(f"atelier chat: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "db": lambda settings, args: asyncio.run(_db(settings, args)),
    "run": _run,
    "chat": _chat,
    "worker": _worker,
    "models": _models,
    "config": run_config,
    "serve": run_serve,
    "keys": run_keys,
    "gallery": lambda settings, args: asyncio.run(_gallery(settings, args)),
    "export": run_export,
    "check": run_check,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    if args.command == "doctor":  # reads the config itself: a bad file is one of the things it reports
        from bot.doctor import run_doctor

        return run_doctor(args.config, as_json=args.json)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"atelier: configuration error\n{e}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](settings, args)
    except UserError as e:  # bad input to any command: said in its own words
        print(f"atelier {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
