"""A protocol-level fake of Discord on loopback: a JSON gateway (websocket) and the REST routes the bot uses.

discord.py runs unmodified against it (Route.BASE and DiscordWebSocket.DEFAULT_GATEWAY are pointed here), so
tests exercise the library's real HTTP client, rate-limit handling, gateway parsing and interaction code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import discord
import yarl
from aiohttp import web
from discord.gateway import DiscordWebSocket
from discord.http import Route

EPHEMERAL, LOADING = 64, 128
ALL_PERMS = str((1 << 50) - 1)


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    """discord.py parses a body as JSON only when Content-Type is exactly application/json."""
    h = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=h)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def user(uid: int, name: str, bot: bool = False) -> dict:
    return {"id": str(uid), "username": name, "global_name": name, "discriminator": "0", "avatar": None,
            "bot": bot, "public_flags": 0}  # fmt: skip


@dataclass
class Call:
    """One REST request the bot made."""

    method: str
    path: str
    body: dict
    files: list[tuple[str, bytes]] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)


class FakeDiscord:
    """State and routes of the fake. Inject failures with `fail_next(method, path_regex, status, body)`."""

    def __init__(self) -> None:
        self._ids = itertools.count(1000)
        self.app_id, self.guild_id, self.channel_id = 900, 901, 902
        self.bot_user = user(903, "atelier", bot=True)
        self.alice, self.bob = user(904, "alice"), user(905, "bob")
        self.admin_ids = {904}
        self.calls: list[Call] = []
        self.messages: dict[int, dict] = {}
        self.originals: dict[str, int] = {}  # interaction token -> original message id
        self.expired_tokens: set[str] = set()
        self.cdn: dict[str, bytes] = {}
        self.failures: list[tuple] = []
        self.ws: web.WebSocketResponse | None = None
        self.seq = 0
        self.identified = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{name}", self._cdn)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def patch(self, monkeypatch: Any) -> None:
        """Point discord.py at this server."""
        monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{self.port}/api/v10")
        monkeypatch.setattr(
            DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{self.port}/gateway")
        )

    async def stop(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def next_id(self, when: dt.datetime | None = None) -> int:
        return discord.utils.time_snowflake(when or dt.datetime.now(dt.UTC)) + next(self._ids)

    # -- gateway ------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for msg in ws:
            data = json.loads(msg.data)
            if data["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif data["op"] == 2:
                await self._ready()
        return ws

    async def _ready(self) -> None:
        url = f"ws://127.0.0.1:{self.port}/gateway"
        await self.dispatch("READY", {
            "v": 10, "user": self.bot_user, "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": "fake", "resume_gateway_url": url, "shard": [0, 1],
            "application": {"id": str(self.app_id), "flags": 0},
        })  # fmt: skip
        await self.dispatch("GUILD_CREATE", self.guild_payload())
        self.identified.set()

    async def dispatch(self, event: str, data: dict) -> None:
        """Send one gateway event to the bot."""
        self.seq += 1
        assert self.ws is not None, "the bot has not connected"
        await self.ws.send_str(json.dumps({"op": 0, "t": event, "s": self.seq, "d": data}))

    def member(self, u: dict) -> dict:
        return {"user": u, "roles": [], "joined_at": _now(), "deaf": False, "mute": False, "flags": 0}

    def channel_payload(self) -> dict:
        return {"id": str(self.channel_id), "type": 0, "name": "general", "position": 0,
                "guild_id": str(self.guild_id), "permission_overwrites": [], "nsfw": False}  # fmt: skip

    def guild_payload(self) -> dict:
        members = [self.member(u) for u in (self.bot_user, self.alice, self.bob)]
        role = {"id": str(self.guild_id), "name": "@everyone", "permissions": "104324673", "position": 0,
                "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}  # fmt: skip
        return {
            "id": str(self.guild_id), "name": "Test", "unavailable": False, "member_count": len(members),
            "members": members, "channels": [self.channel_payload()], "roles": [role], "owner_id": self.alice["id"],
            "features": [], "emojis": [], "stickers": [], "threads": [], "stage_instances": [],
            "guild_scheduled_events": [], "voice_states": [], "presences": [], "large": False, "premium_tier": 0,
            "mfa_level": 0, "verification_level": 0, "explicit_content_filter": 0, "nsfw_level": 0,
            "default_message_notifications": 0, "system_channel_flags": 0, "preferred_locale": "en-US",
            "afk_timeout": 300, "joined_at": _now(), "icon": None, "splash": None, "banner": None,
        }  # fmt: skip

    # -- payload builders ---------------------------------------------------------------------

    def attachment(self, name: str, data: bytes, content_type: str = "image/png") -> dict:
        aid = self.next_id()
        self.cdn[f"{aid}-{name}"] = data
        url = f"http://127.0.0.1:{self.port}/cdn/{aid}-{name}"
        return {"id": str(aid), "filename": name, "size": len(data), "url": url, "proxy_url": url,
                "content_type": content_type}  # fmt: skip

    def message(self, author: dict, content: str = "", *, attachments: list | None = None,
                components: list | None = None, reply_to: int | None = None, flags: int = 0,
                dm: bool = False, mentions: list | None = None) -> dict:  # fmt: skip
        """Build (and remember) a message payload."""
        mid = self.next_id()
        m = {
            "id": str(mid), "channel_id": str(self.channel_id), "author": author, "content": content,
            "timestamp": _now(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": mentions or [], "mention_roles": [], "attachments": attachments or [], "embeds": [],
            "pinned": False, "type": 19 if reply_to else 0, "flags": flags, "components": components or [],
        }  # fmt: skip
        if not dm:
            m["guild_id"] = str(self.guild_id)
            m["member"] = {k: v for k, v in self.member(author).items() if k != "user"}
        if reply_to:
            m["message_reference"] = {"message_id": str(reply_to), "channel_id": str(self.channel_id)}
            ref = self.messages.get(reply_to)
            m["referenced_message"] = ref
        self.messages[mid] = m
        return m

    def _interaction(self, itype: int, data: dict, who: dict, when: dt.datetime | None, **extra: Any) -> dict:
        iid = self.next_id(when)
        perms = ALL_PERMS if int(who["id"]) in self.admin_ids else "104324673"
        member = {**self.member(who), "permissions": perms}
        return {
            "id": str(iid), "application_id": str(self.app_id), "type": itype, "token": f"tok-{iid}",
            "version": 1, "data": data, "guild_id": str(self.guild_id), "channel_id": str(self.channel_id),
            "channel": self.channel_payload(), "member": member, "app_permissions": ALL_PERMS,
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [], "context": 0,
            "authorizing_integration_owners": {"0": str(self.guild_id)}, "attachment_size_limit": 10 * 2**20,
            **extra,
        }  # fmt: skip

    def slash(self, command: str, who: dict | None = None, /, *, sub: str | None = None,
              when: dt.datetime | None = None, **options: Any) -> dict:  # fmt: skip
        """An APPLICATION_COMMAND interaction; dict values with 'filename' become attachment options."""
        opts, resolved = [], {}
        for key, value in options.items():
            if isinstance(value, dict):
                resolved[value["id"]] = value
                opts.append({"name": key, "type": 11, "value": value["id"]})
            else:
                kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 10 if isinstance(
                    value, float) else 3  # fmt: skip
                opts.append({"name": key, "type": kind, "value": value})
        if sub:
            opts = [{"name": sub, "type": 1, "options": opts}]
        data: dict[str, Any] = {"id": str(self.next_id()), "name": command, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = {"attachments": resolved}
        return self._interaction(2, data, who or self.alice, when)

    def autocomplete(self, name: str, focused: str, value: str, who: dict | None = None, sub: str | None = None,
                     **options: Any) -> dict:  # fmt: skip
        opts = [{"name": k, "type": 3, "value": v} for k, v in options.items()]
        opts.append({"name": focused, "type": 3, "value": value, "focused": True})
        if sub:
            opts = [{"name": sub, "type": 1, "options": opts}]
        data = {"id": str(self.next_id()), "name": name, "type": 1, "options": opts}
        return self._interaction(4, data, who or self.alice, None)

    def click(self, message: dict, custom_id: str, who: dict | None = None) -> dict:
        """A MESSAGE_COMPONENT (button) interaction on `message`."""
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interaction(3, data, who or self.alice, None, message=message)

    # -- REST -----------------------------------------------------------------------------------

    def fail_next(self, method: str, path: str, status: int, body: Any = None, headers: dict | None = None,
                  when: Any = None) -> None:  # fmt: skip
        """Make the next request matching method + path regex (+ `when(json_body)`) fail with this status."""
        self.failures.append(
            (method, re.compile(path), status, body, headers or {}, when or (lambda b: True))
        )

    async def _cdn(self, request: web.Request) -> web.Response:
        return web.Response(body=self.cdn[request.match_info["name"]], content_type="image/png")

    async def _read(self, request: web.Request) -> tuple[dict, list[tuple[str, bytes]]]:
        files: list[tuple[str, bytes]] = []
        if request.content_type == "multipart/form-data":
            body: dict = {}
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files.append((part.filename or part.name or "", bytes(await part.read())))
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else {}), files

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await self._read(request)
        self.calls.append(Call(request.method, path, body, files))
        for i, (method, pattern, status, fbody, headers, when) in enumerate(self.failures):
            if method == request.method and pattern.search(path) and when(body):
                del self.failures[i]
                return _json(fbody or {"message": "injected", "code": 0}, status=status, headers=headers)
        for method, pattern, handler in self._routes():
            m = re.fullmatch(pattern, path)
            if m and method == request.method:
                out = handler(request, body, files, **m.groupdict())
                if isinstance(out, web.StreamResponse):
                    return out
                return _json(out) if out is not None else web.Response(status=204)
        return _json({"message": f"fake: no route {request.method} {path}", "code": 0}, status=404)

    def _routes(self) -> list[tuple[str, str, Any]]:
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        return [
            ("GET", r"/users/@me", lambda *a: self.bot_user),
            ("GET", r"/oauth2/applications/@me", lambda *a: self._appinfo()),
            ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback", self._callback),
            ("PATCH", hook + r"/messages/@original", self._edit_original),
            ("DELETE", hook + r"/messages/@original", self._delete_original),
            ("POST", hook, self._followup),
            ("PATCH", hook + r"/messages/(?P<mid>\d+)", self._edit_hook_message),
            ("POST", r"/channels/(?P<cid>\d+)/messages", self._send),
            ("PATCH", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._edit_message),
            ("DELETE", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._delete_message),
            ("GET", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._get_message),
            ("POST", r"/channels/(?P<cid>\d+)/typing", lambda *a, **k: None),
            ("GET", r"/channels/(?P<cid>\d+)", lambda *a, **k: self.channel_payload()),
        ]

    def _appinfo(self) -> dict:
        return {"id": str(self.app_id), "name": "Atelier", "description": "", "icon": None, "rpc_origins": [],
                "bot_public": True, "bot_require_code_grant": False, "owner": self.alice, "verify_key": "k",
                "flags": 0, "summary": ""}  # fmt: skip

    def _bot_message(self, body: dict, files: list, *, flags: int = 0, reply_to: int | None = None) -> dict:
        atts = [self.attachment(name, data) for name, data in files]
        m = self.message(self.bot_user, body.get("content") or "", attachments=atts,
                         components=body.get("components") or [], flags=flags | (body.get("flags") or 0),
                         reply_to=reply_to)  # fmt: skip
        return m

    def _apply_edit(self, m: dict, body: dict, files: list) -> dict:
        for key in ("content", "components"):
            if key in body:
                m[key] = body[key] if body[key] is not None else ([] if key == "components" else "")
        if "attachments" in body or files:
            keep_ids = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in m["attachments"] if a["id"] in keep_ids]
            m["attachments"] = kept + [self.attachment(n, d) for n, d in files]
        m["flags"] = m.get("flags", 0) & ~LOADING
        m["edited_timestamp"] = _now()
        return m

    def _token_dead(self, token: str) -> web.Response | None:
        if token in self.expired_tokens:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        return None

    def _callback(self, request: web.Request, body: dict, files: list, iid: str, token: str) -> Any:
        kind, data = body["type"], body.get("data") or {}
        resource: dict[str, Any] = {"type": kind}
        msg = None
        if kind == 5:
            msg = self._bot_message({}, [], flags=LOADING | (data.get("flags") or 0))
        elif kind == 4:
            msg = self._bot_message(data, files)
        if msg is not None:
            self.originals[token] = int(msg["id"])
            resource["message"] = msg
        if "with_response" not in request.query:
            return None
        inter = {"id": iid, "type": 2, "response_message_id": msg["id"] if msg else None,
                 "response_message_loading": kind == 5, "response_message_ephemeral": bool(
                     msg and msg["flags"] & EPHEMERAL)}  # fmt: skip
        return {"interaction": inter, "resource": resource}

    def _original(self, token: str) -> dict:
        return self.messages[self.originals[token]]

    def _edit_original(self, request: web.Request, body: dict, files: list, app: str, token: str) -> Any:
        return self._token_dead(token) or self._apply_edit(self._original(token), body, files)

    def _delete_original(self, request: web.Request, body: dict, files: list, app: str, token: str) -> Any:
        if dead := self._token_dead(token):
            return dead
        self.messages.pop(self.originals[token], None)
        return None

    def _followup(self, request: web.Request, body: dict, files: list, app: str, token: str) -> Any:
        return self._token_dead(token) or self._bot_message(body, files)

    def _edit_hook_message(
        self, request: web.Request, body: dict, files: list, app: str, token: str, mid: str
    ) -> Any:
        return self._token_dead(token) or self._apply_edit(self.messages[int(mid)], body, files)

    def _send(self, request: web.Request, body: dict, files: list, cid: str) -> Any:
        ref = (body.get("message_reference") or {}).get("message_id")
        return self._bot_message(body, files, reply_to=int(ref) if ref else None)

    def _edit_message(self, request: web.Request, body: dict, files: list, cid: str, mid: str) -> Any:
        return self._apply_edit(self.messages[int(mid)], body, files)

    def _delete_message(self, request: web.Request, body: dict, files: list, cid: str, mid: str) -> Any:
        self.messages.pop(int(mid), None)
        return None

    def _get_message(self, request: web.Request, body: dict, files: list, cid: str, mid: str) -> Any:
        m = self.messages.get(int(mid))
        return m if m is not None else _json({"message": "Unknown Message", "code": 10008}, status=404)

    # -- assertions helpers -------------------------------------------------------------------

    def find(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.search(pattern, c.path)]

    async def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if out := predicate():
                return out
            await asyncio.sleep(0.01)
        raise AssertionError(
            f"timed out waiting for {what}; calls: {[(c.method, c.path) for c in self.calls]}"
        )
