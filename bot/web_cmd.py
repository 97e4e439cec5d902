"""`atelier serve` (the web front) and `atelier keys create|list|revoke` (web API keys) in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from engine.config import Settings


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """Add the `serve` and `keys` commands to the CLI's subparsers."""
    serve = sub.add_parser(
        "serve",
        help="serve the web front (REST API, webhooks, gallery) without Discord",
        description="Serve the REST API under /v1 (docs at /docs) and the gallery on web.host:web.port.",
    )
    serve.add_argument("--host", help="address to listen on (default: web.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: web.port; 0 = any free port)")
    serve.add_argument("--demo", action="store_true", help="use the offline test models")

    keys = sub.add_parser("keys", help="create, list or revoke web API keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = ksub.add_parser(
        "create", help="a new key acting as --user (in --guild); the token is shown once"
    )
    create.add_argument("--name", default="", help="a label to tell keys apart")
    ls = ksub.add_parser("list", help="a user's keys (prefix, scope, use, state)")
    ls.add_argument("--json", action="store_true", help="one JSON object per key")
    revoke = ksub.add_parser("revoke", help="revoke one of --user's keys")
    revoke.add_argument("key_id", type=int, metavar="ID")
    for p in (create, ls, revoke):
        p.add_argument("--user", type=int, required=True, help="the owner's user id (as on Discord)")
        p.add_argument("--guild", type=int, default=None, help="the guild the key acts in (default: none)")


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import App
    from bot.web.app import create_app
    from bot.web.server import WebServer

    host = args.host or settings.web.host
    port = settings.web.port if args.port is None else args.port
    app = await App.start(settings, demo=args.demo)
    try:
        server = WebServer(create_app(app.engine, app.agent, settings), host, port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # finish requests, then stop the engine cleanly
            loop.add_signal_handler(sig, server.request_stop)
        print(f"atelier serve: {server.url} (API docs: {server.url}/docs)", file=sys.stderr, flush=True)
        await server.serve()
    finally:
        await app.stop()
    return 0


def run_serve(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier serve`: the App plus the web app on uvicorn, until Ctrl-C / SIGTERM."""
    from engine.runtime.managed import ModelNotAvailable

    try:
        return asyncio.run(_serve(settings, args))
    except ModelNotAvailable as e:
        print(f"atelier serve: a model is missing: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"atelier serve: cannot listen: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from bot.usecases import apikeys
    from engine.store import open_store

    store = await open_store(settings)
    keys = store.apikeys
    try:
        if args.keys_command == "create":
            key = await apikeys.create_key(keys, args.user, args.guild or 0, args.name)
            print(apikeys.created_text(key, settings.web.public_url).replace("**", ""))
        elif args.keys_command == "list":
            keys = await apikeys.list_keys(keys, args.user, args.guild)
            for k in keys:
                if args.json:
                    print(json.dumps({"id": k.id, "prefix": k.prefix, "name": k.name, "guild_id": k.guild_id,
                                      "created_at": k.created_at, "last_used_at": k.last_used_at,
                                      "revoked": k.revoked}))  # fmt: skip
                else:
                    print(apikeys.key_line(k).replace("`", ""))
            if not keys and not args.json:
                print("no API keys")
        else:
            print(await apikeys.revoke_key(keys, args.user, args.key_id))
    finally:
        await store.close()
    return 0


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier keys create|list|revoke`."""
    return asyncio.run(_keys(settings, args))
