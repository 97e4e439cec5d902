"""Discord end to end with the REAL agent: SmolLM2-135M through llama.cpp and a tiny diffusion pipeline.

"@Atelier draw a red fox" becomes a generate call, a rendered job, and a posted PNG with result buttons.
"""

from __future__ import annotations

import io
import json

from PIL import Image

from engine.runtime.diffusion.png import read_png_meta
from tests.discord_support import real_bot


async def test_mention_draw_a_red_fox_posts_an_image(tmp_path, monkeypatch, tiny_models_dir):
    from engine.looplag import LoopWatchdog

    dog = LoopWatchdog().start()
    async with real_bot(tmp_path, monkeypatch, tiny_models_dir) as (fake, bot, services, agent):
        mention = fake.message(fake.alice, f"<@{fake.bot_user['id']}> draw a red fox", mentions=[fake.bot_user])
        await fake.dispatch("MESSAGE_CREATE", mention)

        def posted_images():
            return [c for c in fake.calls if c.files and c.method in ("POST", "PATCH") and "/messages" in c.path]

        await fake.wait_for(posted_images, timeout=240, what="the posted image")
        replies = [c.body.get("content", "") for c in fake.find("POST", r"/channels/\d+/messages$")]
    dog.stop()
    print("\nLOOP_LAG " + json.dumps(dog.stats()))
    assert any(r.startswith('Drawing "') and "fox" in r for r in replies), replies
    post = posted_images()[0]
    name, data = post.files[0]
    assert name.endswith(".png") and Image.open(io.BytesIO(data)).size == (64, 64)
    assert post.body.get("components"), "results come with buttons"
    path = tmp_path / "posted.png"
    path.write_bytes(data)
    assert "fox" in read_png_meta(path)["atelier"]["prompt"]
