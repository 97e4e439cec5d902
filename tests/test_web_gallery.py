"""The web gallery through httpx against the real app: sign-in, scoping, escaping, CSRF, files, shares."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from bot.usecases import gallery as uc
from bot.web.app import create_app
from engine.core import Engine
from tests.gallery_support import (
    GUILD,
    OTHER,
    OWNER,
    add_generation,
    card_ids,
    csrf_of,
    gallery_settings,
    login_token,
    next_url,
    write_png,
)

HOSTILE = "<script>alert(1)</script> \"quoted\" & 'single' <img src=x onerror=alert(2)>"


@pytest.fixture
async def engine(tmp_path: Path):
    eng = await Engine.start(gallery_settings(tmp_path), worker=False)
    yield eng
    await eng.stop()


@pytest.fixture
async def client(engine: Engine):
    """Factory of httpx clients on one app (each with its own cookie jar)."""
    app = create_app(engine, None, engine.settings)
    made: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        made.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver"))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


async def signed_in(engine: Engine, make, user_id: int = OWNER, guild_id: int = 0) -> httpx.AsyncClient:
    c = make()
    r = await c.get(f"/login/{login_token(await uc.login_link(engine, user_id, guild_id))}")
    assert r.status_code == 303 and r.headers["location"] == "/gallery"
    return c


async def test_login_link_is_single_use_and_sets_a_safe_cookie(engine, client):
    url = await uc.login_link(engine, OWNER)
    assert url.startswith("http://testserver/login/") and len(login_token(url)) >= 43  # 256 bits
    c = client()
    assert (await c.get("/gallery")).status_code == 401
    r = await c.get(f"/login/{login_token(url)}")
    assert r.status_code == 303 and r.headers["location"] == "/gallery"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert (await c.get("/gallery")).status_code == 200
    again = client()
    assert (await again.get(f"/login/{login_token(url)}")).status_code == 403
    assert (await again.get("/gallery")).status_code == 401
    stored = await engine.store.db.fetchall("SELECT token_hash FROM web_logins")
    assert all(login_token(url) not in r[0] for r in stored)  # only the hash is kept


async def test_expired_or_unknown_login_links_do_not_sign_in(engine, client):
    token = await engine.store.web.create_login(OWNER, 0, ttl_s=-1)
    c = client()
    assert (await c.get(f"/login/{token}")).status_code == 403
    assert (await c.get("/login/not-a-real-token")).status_code == 403
    assert (await c.get("/gallery")).status_code == 401
    c.cookies.set("atelier_session", "forged")
    assert (await c.get("/gallery")).status_code == 401


async def test_https_public_url_makes_the_cookie_secure(tmp_path: Path):
    eng = await Engine.start(gallery_settings(tmp_path, "https://gallery.example"), worker=False)
    try:
        app = create_app(eng, None, eng.settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c:
            r = await c.get(f"/login/{login_token(await uc.login_link(eng, OWNER))}")
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
    finally:
        await eng.stop()


async def test_the_grid_is_newest_first_in_keyset_pages_of_thumbnails_only(engine, client):
    ids = [await add_generation(engine, i) for i in range(70)]
    theirs = await add_generation(engine, 99, user_id=OTHER)
    c = await signed_in(engine, client)
    first = (await c.get("/gallery")).text
    assert card_ids(first) == ids[::-1][: uc.PAGE_SIZE] and theirs not in card_ids(first)
    assert "/gallery/img/" not in first and f"/gallery/thumb/{ids[-1]}/0" in first
    more = next_url(first)
    assert more == f"/gallery/page?before={ids[-uc.PAGE_SIZE]}"
    second = (await c.get(more)).text
    assert card_ids(second) == ids[::-1][uc.PAGE_SIZE :] and next_url(second) is None


async def test_thumbnails_are_made_once_beside_the_image(engine, client):
    gid = await add_generation(engine, 1)
    c = await signed_in(engine, client)
    r = await c.get(f"/gallery/thumb/{gid}/0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    (image,) = (await engine.store.history.get(gid, uc.Scope(OWNER))).images
    thumb = Path(image).with_name(Path(image).stem + ".thumb.jpg")
    assert thumb.is_file()
    stamp = thumb.stat().st_mtime_ns
    assert (await c.get(f"/gallery/thumb/{gid}/0")).content == r.content
    assert thumb.stat().st_mtime_ns == stamp
    assert await engine.store.web.thumbnails([gid]) == {(gid, 0): str(thumb)}


async def test_grid_pages_schedule_missing_thumbnails_in_the_background(engine, client):
    ids = [await add_generation(engine, i) for i in range(3)]
    c = await signed_in(engine, client)
    assert (await c.get("/gallery")).status_code == 200
    for _ in range(100):
        if len(await engine.store.web.thumbnails(ids)) == 3:
            break
        await asyncio.sleep(0.05)
    assert sorted(k[0] for k in await engine.store.web.thumbnails(ids)) == ids


async def test_a_hostile_prompt_is_escaped_everywhere(engine, client):
    gid = await add_generation(engine, 1, prompt=HOSTILE, style="<b>bold</b>")
    c = await signed_in(engine, client)
    grid, page = await c.get("/gallery"), await c.get(f"/gallery/g/{gid}")
    share = await c.post(f"/gallery/g/{gid}/share", data={"csrf": csrf_of(page.text)})
    public = await client().get(share.text.split('id="share-url" href="')[1].split('"')[0])
    for r in (grid, page, public):
        assert r.status_code == 200, r.text
        assert "<script>alert" not in r.text and "<img src=x" not in r.text and "<b>bold" not in r.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text


async def test_state_changing_posts_need_the_session_csrf_token(engine, client):
    gid = await add_generation(engine, 1)
    c = await signed_in(engine, client)
    token = csrf_of((await c.get(f"/gallery/g/{gid}")).text)
    for data in ({"on": "1"}, {"on": "1", "csrf": "wrong"}, {"on": "1", "csrf": ""}):
        assert (await c.post(f"/gallery/g/{gid}/favorite", data=data)).status_code == 403
    assert (await c.post(f"/gallery/g/{gid}/delete", data={"csrf": "x"})).status_code == 403
    assert (await c.post(f"/gallery/g/{gid}/share", data={})).status_code == 403
    other = await signed_in(engine, client)  # another session's token is not this one's
    assert (
        await other.post(f"/gallery/g/{gid}/favorite", data={"on": "1", "csrf": token})
    ).status_code == 403
    assert (
        await client().post(f"/gallery/g/{gid}/favorite", data={"on": "1", "csrf": token})
    ).status_code == 401
    assert not (await engine.store.history.get(gid, uc.Scope(OWNER))).favorite
    r = await c.post(f"/gallery/g/{gid}/favorite", data={"on": "1", "csrf": token})
    assert r.status_code == 303 and (await engine.store.history.get(gid, uc.Scope(OWNER))).favorite
    assert "★ Unfavorite" in (await c.get(f"/gallery/g/{gid}")).text


async def test_path_traversal_and_odd_ids_are_not_found(engine, client):
    gid = await add_generation(engine, 1)
    outside = await add_generation(engine, 2, images=["/etc/passwd"])
    c = await signed_in(engine, client)
    assert (await c.get(f"/gallery/img/{gid}/0")).headers["content-type"] == "image/png"
    for path in (
        f"/gallery/img/{gid}/..%2F..%2F..%2Fetc%2Fpasswd", "/gallery/img/..%2F..%2Fetc%2Fpasswd/0",
        f"/gallery/img/{gid}/-1", f"/gallery/img/{gid}/1", f"/gallery/img/{gid}/0.0", f"/gallery/img/{outside}/0",
        f"/gallery/thumb/{outside}/0", f"/gallery/thumb/{gid}/%2e%2e", f"/gallery/map/{gid}/0",
        "/gallery/static/..%2Fgallery.py", "/gallery/static/%2e%2e%2fgallery.py", "/gallery/static/gallery.py",
        "/gallery/g/..%2F1", "/gallery/g/1e3", "/s/..%2F..%2Fetc%2Fpasswd", "/s/x/img/0",
    ):  # fmt: skip
        r = await c.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert b"root:" not in r.content
    assert (await c.get("/gallery/static/gallery.js")).headers["content-type"].startswith("text/javascript")


async def test_another_users_images_are_not_found(engine, client):
    theirs = await add_generation(engine, 1, user_id=OTHER)
    c = await signed_in(engine, client)
    token = csrf_of((await c.get("/gallery")).text)
    for path in (f"/gallery/g/{theirs}", f"/gallery/img/{theirs}/0", f"/gallery/thumb/{theirs}/0"):
        assert (await c.get(path)).status_code == 404
    for action in ("favorite", "delete", "share"):
        assert (
            await c.post(f"/gallery/g/{theirs}/{action}", data={"csrf": token, "on": "1"})
        ).status_code == 404
    assert await engine.store.history.get(theirs, uc.Scope(OTHER)) is not None


async def test_a_guild_that_allows_it_shares_its_gallery_read_only(engine, client):
    mine = await add_generation(engine, 1, guild_id=GUILD)
    theirs = await add_generation(engine, 2, user_id=OTHER, guild_id=GUILD)
    c = await signed_in(engine, client, guild_id=GUILD)
    assert card_ids((await c.get("/gallery")).text) == [mine]
    await engine.store.settings.update("guild", GUILD, **{uc.GUILD_SHARED_KEY: True})
    assert card_ids((await c.get("/gallery")).text) == [theirs, mine]
    page = (await c.get(f"/gallery/g/{theirs}")).text
    assert "Create share link" not in page and "/favorite" not in page
    r = await c.post(f"/gallery/g/{theirs}/favorite", data={"csrf": csrf_of(page), "on": "1"})
    assert r.status_code == 404
    dm = await signed_in(engine, client)  # a link made outside the guild sees only the user's own
    assert card_ids((await dm.get("/gallery")).text) == [mine]


async def test_share_links_work_signed_out_until_revoked(engine, client):
    gid = await add_generation(engine, 1, prompt="a shared lighthouse")
    c = await signed_in(engine, client)
    r = await c.post(
        f"/gallery/g/{gid}/share", data={"csrf": csrf_of((await c.get(f"/gallery/g/{gid}")).text)}
    )
    assert r.status_code == 201
    link = r.text.split('id="share-url" href="')[1].split('"')[0]
    token = link.rsplit("/", 1)[1]
    assert link == f"http://testserver/s/{token}" and len(token) >= 43
    anyone = client()
    page = await anyone.get(f"/s/{token}")
    assert page.status_code == 200 and "a shared lighthouse" in page.text and "csrf" not in page.text
    img = await anyone.get(f"/s/{token}/img/0")
    assert img.status_code == 200 and img.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert (await anyone.get(f"/gallery/g/{gid}")).status_code == 401
    (share,) = await engine.store.web.shares(gid, OWNER)
    page = (await c.get(f"/gallery/g/{gid}")).text
    assert f"/share/{share.id}/revoke" in page and token not in page  # shown once, kept hashed
    r = await c.post(f"/gallery/g/{gid}/share/{share.id}/revoke", data={"csrf": csrf_of(page)})
    assert r.status_code == 303
    assert (await anyone.get(f"/s/{token}")).status_code == 404
    assert (await anyone.get(f"/s/{token}/img/0")).status_code == 404


async def test_search_and_filters_narrow_the_grid(engine, client):
    day = 86400
    t0 = time.mktime((2026, 6, 1, 12, 0, 0, 0, 0, 0))
    cat = await add_generation(engine, 1, prompt="a sleepy cat on a sofa", preset="sd15", created_at=t0)
    dog = await add_generation(
        engine, 2, prompt="a dog in the snow", style="watercolor", created_at=t0 + 5 * day
    )
    cats = await add_generation(engine, 3, prompt="two cats playing", created_at=t0 + 10 * day)
    await add_generation(engine, 4, user_id=OTHER, prompt="a cat that is not yours")
    await engine.store.history.set_favorite(dog, OWNER, True)
    c = await signed_in(engine, client)

    async def ids(**params: str) -> list[int]:
        r = await c.get("/gallery", params=params)
        assert r.status_code == 200, r.text
        return card_ids(r.text)

    assert await ids(q="cat") == [cat]
    assert await ids(q="dog snow") == [dog]
    assert await ids(favorite="1") == [dog]
    assert await ids(preset="sd15") == [cat]
    assert await ids(style="watercolor") == [dog]
    assert await ids(since="2026-06-05", until="2026-06-06") == [dog]
    assert await ids(until="2026-06-01") == [cat]
    assert await ids(since="2026-06-11") == [cats]
    for hostile in ('"', "NEAR(cat", "prompt:cat", "*", "cat OR", "AND", "'; DROP TABLE generations; --"):
        r = await c.get("/gallery", params={"q": hostile})
        assert r.status_code == 200 and "error" not in r.text.split("<main>")[1][:200], hostile
    bad = await c.get("/gallery", params={"since": "June"})
    assert bad.status_code == 400 and "since must be a date" in bad.text
    assert (await c.get("/gallery", params={"q": "x" * 600})).status_code == 400


async def test_image_page_shows_parameters_lineage_and_the_imagine_command(engine, client):
    parent = await add_generation(engine, 1, prompt="a castle")
    cmap = write_png(engine.settings.path("outputs") / "2026-12-01" / "9-control-0.png", 5)
    controls = [{"type": "canny", "scale": 0.8, "map": cmap}, {"type": "depth", "scale": 1, "map": "/etc/passwd"}]
    gid = await add_generation(engine, 2, prompt="a castle at night", parent_id=parent, style="noir",
                               params={"aspect": "16:9", "steps": 30, "controls": controls})  # fmt: skip
    child = await add_generation(engine, 3, prompt="a castle at night, upscaled", parent_id=gid)
    c = await signed_in(engine, client)
    page = (await c.get(f"/gallery/g/{gid}")).text
    assert f'href="/gallery/g/{parent}"' in page and f'href="/gallery/g/{child}"' in page
    assert "/imagine prompt:a castle at night preset:sdxl style:noir aspect:16:9 seed:1002" in page
    assert "&#34;steps&#34;: 30" in page or '"steps": 30' in page
    assert f'src="/gallery/img/{gid}/0"' in page
    assert f'src="/gallery/map/{gid}/0"' in page and "canny control map" in page
    r = await c.get(f"/gallery/map/{gid}/0")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert (await c.get(f"/gallery/map/{gid}/1")).status_code == 404  # recorded outside outputs/


async def test_delete_removes_the_generation_and_its_files(engine, client):
    gid = await add_generation(engine, 1)
    c = await signed_in(engine, client)
    assert (await c.get(f"/gallery/thumb/{gid}/0")).status_code == 200
    g = await engine.store.history.get(gid, uc.Scope(OWNER))
    image, thumb = Path(g.images[0]), Path(g.images[0]).with_name(Path(g.images[0]).stem + ".thumb.jpg")
    page = (await c.get(f"/gallery/g/{gid}")).text
    r = await c.post(f"/gallery/g/{gid}/delete", data={"csrf": csrf_of(page)})
    assert r.status_code == 303 and r.headers["location"] == "/gallery"
    assert await engine.store.history.get(gid, uc.Scope(OWNER)) is None
    assert not image.exists() and not thumb.exists()
    assert (await c.get(f"/gallery/g/{gid}")).status_code == 404


async def test_sign_out_ends_the_session(engine, client):
    c = await signed_in(engine, client)
    token = csrf_of((await c.get("/gallery")).text)
    assert (await c.post("/logout", data={"csrf": token})).status_code == 200
    c.cookies.clear()
    assert (await c.get("/gallery")).status_code == 401


async def test_terminal_command_prints_a_working_login_link(engine, client, capsys, tmp_path: Path):
    from bot.cli import main

    config = tmp_path / "gallery-config.json"
    config.write_text(engine.settings.model_dump_json())
    assert await asyncio.to_thread(main, ["--config", str(config), "gallery", "--user", str(OWNER)]) == 0
    link = capsys.readouterr().out.split("\n")[1]
    c = client()
    assert (await c.get(link.replace("http://testserver", ""))).status_code == 303
    assert (await c.get("/gallery")).status_code == 200
    assert await asyncio.to_thread(main, ["--config", str(config), "gallery", "--user", "0"]) == 2


async def test_discord_gallery_command_replies_privately_with_a_working_link(tmp_path: Path, monkeypatch):
    from tests.discord_support import running_env

    async with running_env(tmp_path, monkeypatch, start_runner=False) as env:
        fake = env.fake
        payload = fake.slash("gallery")
        await env.send("INTERACTION_CREATE", payload)
        calls = await fake.wait_for(
            lambda: fake.find("POST", rf"webhooks/\d+/{payload['token']}$"), what="reply"
        )
        body = calls[0].body
        assert body["flags"] & 64 and body["flags"] & 4  # ephemeral, no embed preview fetching the link
        url = body["content"].split("<")[1].split(">")[0]
        app = create_app(env.services, None, env.services.settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get(f"/login/{login_token(url)}")).status_code == 303
            r = await c.get("/gallery")
        assert r.status_code == 200 and "Sign out" in r.text
        session = await env.services.store.web.session(c.cookies["atelier_session"])
        assert (
            session is not None
            and session.user_id == int(fake.alice["id"])
            and session.guild_id == fake.guild_id
        )
