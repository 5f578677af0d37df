"""A worker that stops, seen from 50 real browsers: their EventSources come back spread over SSE_RECONNECT_SPREAD.

Each page is in a browser context of its own (its own connections, as 50
users' browsers would be), with an ``EventSource`` on four gunicorn gevent
workers on Redis. One worker gets SIGTERM; the pages it served record how
long they waited between losing their stream and having it again (from the
other workers). With the spread, those waits are drawn over the window;
without it (``SSE_RECONNECT_SPREAD = 0``), every browser waits its own
reconnection time (3 s in Chromium), and they come back together.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support import browser as chromium
from tests.support.redis_server import RedisServer
from tests.support.workers import Gunicorn

PAGES = 50
#: The page's stream, and the moments (Date.now(), ms) it opened and it was lost (the browser then waits
#: its reconnection time: what the server's last retry: set, or its own).
OPEN = """() => {
  window.opens = [];
  window.losses = [];
  window.source = new EventSource("/stream?channel=storm");
  source.onopen = () => window.opens.push(Date.now());
  source.onerror = () => window.losses.push(Date.now());
}"""


@pytest.fixture
def pages(browser: Browser) -> Iterator[list[Page]]:
    opened = [chromium.new_page(browser) for _ in range(PAGES)]
    yield opened
    for page in opened:
        page.context.close()


@pytest.mark.parametrize("spread", [5, 0])
def test_fifty_pages_of_a_worker_that_stops_come_back_spread_over_the_window(
    tmp_path: Path, pages: list[Page], spread: int
) -> None:
    redis_server = RedisServer(tmp_path)
    running = Gunicorn(tmp_path / "gunicorn.log", redis_server, SSE_RECONNECT_SPREAD=str(spread))
    try:
        for page in pages:
            page.goto(f"http://127.0.0.1:{running.port}/info")
            page.evaluate(OPEN)
        for page in pages:
            chromium.wait_open(page)
        victim = min(running.booted)
        os.kill(victim, signal.SIGTERM)
        psutil.Process(victim).wait(30)  # it ended its streams first
        stopped = [page for page in pages if lost(page)]
        for page in stopped:
            page.wait_for_function("() => window.opens.length >= 2", timeout=30_000)
        # How long each browser of the stopped worker waited between losing its stream and having it again.
        waits = sorted(page.evaluate("() => (window.opens[1] - window.losses[0]) / 1000") for page in stopped)
    finally:
        running.server.stop()
        redis_server.stop()
    shown = f"{len(waits)} pages waited " + ", ".join(f"{wait:.2f}" for wait in waits) + " s"
    assert len(waits) >= 5, shown  # the worker served its share of the 50
    if spread:
        # Each drew its wait between 0 and 5 s: spread over the window, not in one burst, and within it.
        assert waits[-1] - waits[0] >= 2.0 and waits[-1] <= spread + 2.0, shown
    else:
        assert waits[-1] - waits[0] < 1.0, shown  # all after the same reconnection time: together


def lost(page: Page) -> bool:
    """Whether the page's stream was on the stopped worker, which has exited: it is lost (give the page a moment)."""
    try:
        page.wait_for_function("() => window.losses.length > 0", timeout=300)
    except PlaywrightTimeout:
        return False
    return True
