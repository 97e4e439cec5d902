"""API keys from the terminal (`atelier keys`) and Discord (/apikey); `atelier serve` and `atelier run --web`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bot.cli import main
from engine.store import Store
from tests.discord_fake import FakeDiscord
from tests.discord_support import running_env

REPO = Path(__file__).resolve().parent.parent


def _config(tmp: Path, demo_models: Path | None = None, **web: object) -> str:
    data: dict = {"paths": {"data_dir": str(tmp / "data")}, "metrics": {"enabled": False}, "web": web}
    if demo_models is not None:
        data["paths"]["demo_models"] = str(demo_models)
    path = tmp / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_keys_create_list_revoke_in_the_terminal(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert await asyncio.to_thread(main, ["--config", cfg, "keys", "create", "--user", "5", "--guild", "7",
                                          "--name", "ci bot"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    token = re.search(r"Token: `(atl_[\w-]+)`", out).group(1)
    secret = re.search(r"Webhook secret: `(whsec_[\w-]+)`", out).group(1)
    store = await Store.open(tmp_path / "data" / "atelier.db")
    try:
        key = await store.apikeys.find(token)
        assert (key.user_id, key.guild_id, key.name, key.webhook_secret) == (5, 7, "ci bot", secret)
        row = await store.db.fetchone("SELECT token_hash FROM api_keys WHERE id = ?", (key.id,))
        assert token not in json.dumps(dict(row)) and len(row["token_hash"]) == 64  # only the sha256 is kept
    finally:
        await store.close()
    assert await asyncio.to_thread(main, ["--config", cfg, "keys", "list", "--user", "5", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(k["id"], k["prefix"], k["revoked"]) for k in listed] == [(key.id, token[:12], False)]
    assert await asyncio.to_thread(main, ["--config", cfg, "keys", "revoke", str(key.id), "--user", "6"]) == 2
    assert f"no live API key #{key.id}" in capsys.readouterr().err  # not theirs
    assert await asyncio.to_thread(main, ["--config", cfg, "keys", "revoke", str(key.id), "--user", "5"]) == 0
    assert await asyncio.to_thread(main, ["--config", cfg, "keys", "list", "--user", "5"]) == 0
    assert "revoked" in capsys.readouterr().out


async def test_apikey_slash_commands_are_ephemeral_and_scoped_to_the_guild(tmp_path, monkeypatch):
    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake

        async def answer(payload: dict) -> dict:
            await env.send("INTERACTION_CREATE", payload)
            calls = await fake.wait_for(
                lambda: fake.find("POST", rf"webhooks/\d+/{payload['token']}$"), what="reply"
            )
            return calls[0].body

        body = await answer(fake.slash("apikey", sub="create", name="laptop"))
        assert body["flags"] & 64  # ephemeral: only the caller sees the token
        token = re.search(r"Token: `(atl_[\w-]+)`", body["content"]).group(1)
        key = await env.services.store.apikeys.find(token)
        assert (key.user_id, key.guild_id, key.name) == (int(fake.alice["id"]), fake.guild_id, "laptop")
        listing = await answer(fake.slash("apikey", sub="list"))
        assert f"#{key.id} `{token[:12]}…`" in listing["content"] and token not in listing["content"]
        bob = await answer(fake.slash("apikey", fake.bob, sub="revoke", key_id=key.id))
        assert "no live API key" in bob["content"]
        done = await answer(fake.slash("apikey", sub="revoke", key_id=key.id))
        assert "revoked" in done["content"] and (await env.services.store.apikeys.find(token)).revoked


async def test_run_web_serves_the_api_beside_the_bot(tmp_path, monkeypatch, tiny_models_dir):
    from bot.discord.runtime import run_bot
    from engine.config import load_settings

    port = _free_port()
    settings = load_settings(_config(tmp_path, tiny_models_dir, port=port))
    fake = FakeDiscord()
    await fake.start()
    fake.patch(monkeypatch)
    task = asyncio.create_task(run_bot(settings, "fake-token", demo=True, web=True))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(600):
                if task.done():
                    task.result()
                try:
                    r = await c.get("/v1/health")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert r.json() == {"status": "ok"}
            # the fake refuses the command sync (404): the bot logs it and runs on, and so does the web front
            await fake.wait_for(lambda: fake.find("PUT", r"/applications/\d+/commands$"), what="command sync")
            await asyncio.sleep(0.2)
            assert not task.done()
            assert (await c.get("/v1/history")).status_code == 401
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fake.stop()


def test_serve_listens_prints_its_url_and_stops_on_sigint(tmp_path, tiny_models_dir):
    cfg = _config(tmp_path, tiny_models_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "--config", cfg, "serve", "--demo", "--port", "0"],
        cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        url = None
        for line in proc.stderr:
            if m := re.search(r"atelier serve: (http://127\.0\.0\.1:\d+) ", line):
                url = m.group(1)
                break
        assert url, "serve never said where it listens"
        for _ in range(300):
            try:
                r = httpx.get(f"{url}/docs", timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert r.status_code == 200 and "swagger" in r.text.lower()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
