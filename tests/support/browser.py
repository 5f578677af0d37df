"""Debian's headless Chromium for the browser tests, and what they ask of a page.

Never a downloaded browser (no ``playwright install``): ``/usr/bin/chromium``
with the flags of DEVELOPERS.md. The example pages expose their
``EventSource`` as ``window.source``, what arrived as ``window.received``
(``{type, lastEventId, data}`` per event) and ``window.opens``.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No network beyond the package registries: no background connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds a page may take to do what a test waits for.
TIMEOUT = 10_000


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def new_page(browser: Browser) -> Page:
    """A blank page in a browser context of its own (so its own connections); close its ``context``."""
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT)
    return page


def load(page: Page, url: str) -> Page:
    """Open ``url`` in ``page`` and wait until its stream is open."""
    page.goto(url)
    wait_open(page)
    return page


def wait_open(page: Page) -> None:
    """Until the page's ``EventSource`` is open (``readyState`` 1): the server has subscribed it."""
    page.wait_for_function("() => window.source && window.source.readyState === EventSource.OPEN")


def received(page: Page) -> list[dict[str, Any]]:
    """Every event the page has received: ``{"type", "lastEventId", "data"}``."""
    return page.evaluate("() => window.received")  # type: ignore[no-any-return]


def wait_received(page: Page, count: int) -> list[dict[str, Any]]:
    """Until the page has received at least ``count`` events; then all of them."""
    page.wait_for_function("count => window.received.length >= count", arg=count)
    return received(page)
