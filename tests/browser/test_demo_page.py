"""The demo page in a real headless Chromium against `oddsfeed run` (issue 7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from oddsfeed.embedded import free_port
from tests.procs import stop_process
from tests.sysdeps import debian_binary

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"


def chromium() -> str:
    """The Chromium binary; installs Debian's package when missing and we are root."""
    return debian_binary(CHROMIUM, "chromium")


@pytest.fixture
def demo_server() -> Iterator[int]:
    """`oddsfeed run` on free ports with a brisk simulator; yields the HTTP port."""
    http_port, ws_port = free_port(), free_port()
    env = {**os.environ, "ODDSFEED_DEMO__RATE_PER_S": "40", "ODDSFEED_DEMO__EVENTS": "2",
           "ODDSFEED_SERVER__ADMIN_PORT": str(free_port()),
           "ODDSFEED_LOG__FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "oddsfeed", "run", "--http-port",
                             str(http_port), "--ws-port", str(ws_port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "oddsfeed run exited"
                assert time.monotonic() < deadline, "oddsfeed run did not become ready"
                time.sleep(0.1)
        yield http_port
    finally:
        stop_process(proc, signal.SIGINT, 15)


def test_demo_page_live_board_and_bet_slip(demo_server: int) -> None:
    """The page shows live prices that change, a click adds a leg, and placing the bet shows
    a verdict; a screenshot is saved as a test artifact."""
    exe = chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{demo_server}/")
            page.wait_for_selector(".conn.open", timeout=15_000)
            page.wait_for_selector(".sel .price", timeout=15_000)
            first_versions = page.eval_on_selector_all(
                ".market", "rows => rows.map(r => r.dataset.version).join(',')")
            page.wait_for_function(
                "v => [...document.querySelectorAll('.market')].map(r => r.dataset.version)"
                ".join(',') !== v", arg=first_versions, timeout=15_000)
            page.wait_for_selector(".sel.up, .sel.down", timeout=20_000)
            page.locator(".market:not(.locked) .sel:not([disabled])").first.click()
            page.wait_for_selector("#legs li", timeout=5_000)
            page.click("#place")
            verdict = page.wait_for_selector("[data-testid=verdict]", timeout=15_000)
            assert verdict is not None
            assert verdict.inner_text() in ("Accepted", "Rejected")
            page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        finally:
            browser.close()
