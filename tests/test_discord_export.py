"""/export on the protocol-level fake Discord: the dataset zip arrives in the user's DMs, or a clear refusal."""

from __future__ import annotations

import io
import sys
import zipfile
from typing import Any

from tests.discord_fake import FakeDiscord
from tests.discord_support import running_env
from tests.test_export import _fill

DM_CHANNEL = 4242


class DMFake(FakeDiscord):
    """The fake plus POST /users/@me/channels (open a DM), optionally refusing DMs like a closed inbox."""

    refuse_dm = False

    def _routes(self) -> list[tuple[str, str, Any]]:
        return [("POST", r"/users/@me/channels", self._open_dm), *super()._routes()]

    def _open_dm(self, request: Any, body: dict, files: list, **_: Any) -> Any:
        return {"id": str(DM_CHANNEL), "type": 1, "recipients": [self.alice], "last_message_id": None}

    def _send(self, request: Any, body: dict, files: list, cid: str) -> Any:
        if int(cid) == DM_CHANNEL and self.refuse_dm:
            from tests.discord_fake import _json

            return _json({"message": "Cannot send messages to this user", "code": 50007}, status=403)
        return super()._send(request, body, files, cid)


async def _answer(env, payload) -> str:
    fake, tok = env.fake, payload["token"]
    await env.send("INTERACTION_CREATE", payload)
    follow = await fake.wait_for(lambda: fake.find("POST", rf"webhooks/\d+/{tok}$"), 20, "the answer")
    return follow[-1].body.get("content") or ""


async def test_export_dms_split_zips_and_refuses_clearly(tmp_path, monkeypatch):
    fake = DMFake()
    await fake.start()
    try:
        async with running_env(tmp_path, monkeypatch, fake=fake, start_runner=False) as env:
            export_cog = sys.modules["bot.discord.cogs.export"]  # the module load_extension imported
            alice = int(fake.alice["id"])
            await _fill(env.services.store, tmp_path, user=alice)
            text = await _answer(env, fake.slash("export", format="jsonl"))
            assert "Sent 3 image(s) in 1 zip(s)" in text
            dms = fake.find("POST", rf"/channels/{DM_CHANNEL}/messages")
            assert len(dms) == 1
            name, data = dms[0].files[0]
            assert name == "atelier-jsonl.zip"
            z = zipfile.ZipFile(io.BytesIO(data))
            assert "metadata.jsonl" in z.namelist() and sum(n.endswith(".txt") for n in z.namelist()) == 3

            monkeypatch.setattr(export_cog, "upload_limit", lambda: 9_000)
            text = await _answer(env, fake.slash("export"))
            n = int(text.split(" in ")[1].split(" ")[0])
            assert n >= 2
            parts = fake.find("POST", rf"/channels/{DM_CHANNEL}/messages")[1:]
            assert all(len(p.files[0][1]) <= 9_000 for p in parts) and len(parts) == n
            assert parts[0].files[0][0].startswith("atelier-kohya-1of")

            monkeypatch.setattr(export_cog, "upload_limit", lambda: 3000)
            assert "alone is over" in await _answer(env, fake.slash("export"))
            monkeypatch.setattr(export_cog, "upload_limit", lambda: 10 * 2**20)
            fake.refuse_dm = True
            assert "cannot DM you" in await _answer(env, fake.slash("export"))
            assert "no favorites" in await _answer(env, fake.slash("export", fake.bob))
    finally:
        await fake.stop()
