"""The gallery in real headless Chromium (Playwright) against the app served by a real uvicorn."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import async_playwright, expect

from bot.usecases import gallery as uc
from bot.web.app import create_app
from engine.core import Engine
from tests.gallery_support import add_generation, gallery_settings

CHROMIUM = "/usr/bin/chromium"
N = 65  # one full page of 60 and a second page of 5
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> hostile'


async def until(page, expression: str, timeout_s: float = 10.0) -> None:
    """Poll a JS expression with page.evaluate (wait_for_function evals strings, which the strict CSP blocks)."""
    for _ in range(int(timeout_s / 0.05)):
        if await page.evaluate(expression):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still false after {timeout_s} s: {expression}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def served(tmp_path: Path):
    """(base URL, engine): ~60 generations with real PNGs, served by uvicorn on a free port in this loop."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    engine = await Engine.start(gallery_settings(tmp_path, base), worker=False)
    for i in range(N - 1):
        word = "lighthouse" if i % 3 == 0 else "forest"
        await add_generation(engine, i, prompt=f"a {word} study number {i}")
    await add_generation(engine, N, prompt=XSS)
    server = uvicorn.Server(uvicorn.Config(create_app(engine, None, engine.settings), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.05)
    yield base, engine
    server.should_exit = True
    await task
    await engine.stop()


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


async def sign_in(browser, base: str, engine: Engine):
    """A fresh context signed in through a login link (the page lands on /gallery)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    await page.goto(await uc.login_link(engine, 1001))
    assert page.url == f"{base}/gallery"
    return context, page


async def test_grid_thumbnails_search_and_infinite_scroll(served, browser):
    base, engine = served
    context, page = await sign_in(browser, base, engine)
    full_size: list[str] = []
    page.on("request", lambda r: full_size.append(r.url) if "/gallery/img/" in r.url else None)
    cards = page.locator("#grid .card")
    assert await cards.count() == uc.PAGE_SIZE
    await until(
        page,
        "[...document.querySelectorAll('#grid .card img')].slice(0, 8).every(i => i.complete && i.naturalWidth > 0)",
    )
    srcs = await page.eval_on_selector_all("#grid .card img", "els => els.map(e => e.getAttribute('src'))")
    assert all(s.startswith("/gallery/thumb/") for s in srcs)
    width = await page.eval_on_selector("#grid .card img", "i => i.naturalWidth")
    assert 0 < width <= 256
    assert await page.evaluate("window.__xss") is None  # the hostile prompt is text, not markup

    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    await until(page, f"document.querySelectorAll('#grid .card').length === {N}")
    assert await page.locator("#more").count() == 0
    ids = await page.eval_on_selector_all("#grid .card", "els => els.map(e => Number(e.dataset.id))")
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == N

    await page.fill("input[name=q]", "lighthouse")
    await page.press("input[name=q]", "Enter")
    await page.wait_for_url("**/gallery?q=lighthouse*")
    await expect(page.locator("#grid .card")).to_have_count(len(range(0, N - 1, 3)))
    captions = await page.eval_on_selector_all("#grid .card .caption", "els => els.map(e => e.textContent)")
    assert len(captions) == len(range(0, N - 1, 3)) and all("lighthouse" in c for c in captions)
    assert full_size == []  # the grid never loaded a full-size PNG
    await context.close()


async def test_image_page_favorite_and_share_link_in_a_fresh_context(served, browser):
    base, engine = served
    context, page = await sign_in(browser, base, engine)
    await page.click("#grid .card >> nth=1")
    await page.wait_for_url("**/gallery/g/*")
    gen_id = int(page.url.rsplit("/", 1)[1])
    assert await page.locator(".seed").inner_text() == str((await _gen(engine, gen_id)).seed)
    assert (await page.locator("#imagine").inner_text()).startswith("/imagine prompt:a ")
    await until(page, "document.querySelector('.images img').naturalWidth === 96")

    await page.click("button.favorite")
    await expect(page.locator("button.favorite")).to_have_text("★ Unfavorite")
    assert (await _gen(engine, gen_id)).favorite

    await page.click("button.share")
    await expect(page.locator("#share-url")).to_be_visible()
    link = await page.locator("#share-url").get_attribute("href")
    assert link and link.startswith(f"{base}/s/")
    stranger = await browser.new_context()
    public = await stranger.new_page()
    resp = await public.goto(link)
    assert resp is not None and resp.status == 200
    await until(public, "document.querySelector('.images img').naturalWidth === 96")
    assert await public.locator("form.logout").count() == 0  # signed out
    resp = await public.goto(f"{base}/gallery/g/{gen_id}")
    assert resp is not None and resp.status == 401

    await page.goto(f"{base}/gallery/g/{gen_id}")
    await page.click("button.revoke")
    await expect(page.locator("button.revoke")).to_have_count(0)
    resp = await public.goto(link)
    assert resp is not None and resp.status == 404
    await stranger.close()
    await context.close()


async def _gen(engine: Engine, gen_id: int):
    g = await engine.store.history.get(gen_id, uc.Scope(1001))
    assert g is not None
    return g
