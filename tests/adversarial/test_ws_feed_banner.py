"""The demo page in a real headless Chromium shows a banner while the node's store is down
(``status`` ``interrupted``) and hides it once the feed is ``restored``."""

from __future__ import annotations

from pathlib import Path

from tests.browser.test_demo_page import ARTIFACTS, chromium
from tests.fanout.builders import create

from .ws_support import restartable, worker_on

BANNER = "[data-testid=feed-banner]"


async def test_demo_page_banner_follows_the_store(tmp_path: Path) -> None:
    """Killing the store shows the page's feed-interrupted banner (prices struck through,
    bets paused); restarting it hides the banner again."""
    exe = chromium()
    from playwright.async_api import async_playwright

    with restartable(tmp_path / "valkey") as store:
        async with worker_on(store.url) as w:
            await w.store.apply_many([create("m1", "e1"), create("m2", "e1")])
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=exe, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update"])
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 700})
                    await page.goto(f"http://127.0.0.1:{w.http_port}/?ws_port={w.ws_port}")
                    await page.wait_for_selector(".sel .price", timeout=15_000)
                    assert await page.is_hidden(BANNER)
                    store.kill()
                    await page.wait_for_selector(BANNER, state="visible", timeout=15_000)
                    assert "interrupted" in await page.inner_text(BANNER)
                    assert await page.eval_on_selector(
                        "#board", "b => b.classList.contains('stale')")
                    ARTIFACTS.mkdir(exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / "feed-interrupted.png"))
                    store.start()
                    await page.wait_for_selector(BANNER, state="hidden", timeout=20_000)
                    assert not await page.eval_on_selector(
                        "#board", "b => b.classList.contains('stale')")
                finally:
                    await browser.close()
