"""Chromium over HTTP/2 served by gunicorn itself (TLS with a throwaway certificate).

Over HTTP/1.1 a browser holds at most six connections per origin, so a
seventh page's stream waits; over HTTP/2 every page of the origin shares one
connection, and ten pages all receive live events. The walkthrough of the
seed (SPEC 7) holds there too: an event without an id reaches the open pages
only, one with an id also the pages opened afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support import browser as chromium
from tests.support.browser import load, received, wait_received
from tests.support.h2 import H2Server

PAGES = 10


@pytest.fixture
def server(tmp_path: Path) -> Iterator[H2Server]:
    running = H2Server(tmp_path, True, {"SSE_KEEPALIVE": 15})
    yield running
    running.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium.CHROMIUM, args=[*chromium.CHROMIUM_ARGS, "--ignore-certificate-errors"]
        )
        yield launched
        launched.close()


def test_ten_pages_of_one_origin_all_receive_live_events_over_one_connection(
    server: H2Server, browser: Browser
) -> None:
    context = browser.new_context()
    try:
        pages: list[Page] = []
        for _ in range(PAGES):
            page = context.new_page()
            page.set_default_timeout(chromium.TIMEOUT)
            pages.append(load(page, f"{server.url}/page?channel=ten"))
        protocol = pages[-1].evaluate("() => performance.getEntriesByType('navigation')[0].nextHopProtocol")
        assert protocol == "h2"
        assert server.info()["streams"] == PAGES
        server.post("/publish", data="to every page", channel="ten")
        for page in pages:
            assert [event["data"] for event in wait_received(page, 1)] == ["to every page"]
    finally:
        context.close()


def test_walkthrough_over_http2(server: H2Server, browser: Browser) -> None:
    context = browser.new_context()
    try:

        def open_page() -> Page:
            page = context.new_page()
            page.set_default_timeout(chromium.TIMEOUT)
            return load(page, f"{server.url}/page")

        first, second = open_page(), open_page()
        server.post("/publish", data="Hello World!")
        for page in (first, second):
            assert [event["data"] for event in wait_received(page, 1)] == ["Hello World!"]
        later = open_page()
        server.post("/publish", data="Hello World! (again)", id="1")
        for page in (first, second):
            assert [event["data"] for event in wait_received(page, 2)] == ["Hello World!", "Hello World! (again)"]
        assert [event["data"] for event in wait_received(later, 1)] == ["Hello World! (again)"]
        last = open_page()
        assert [event["data"] for event in wait_received(last, 1)] == ["Hello World! (again)"]
        assert received(later)[0]["lastEventId"] == received(last)[0]["lastEventId"] != ""
    finally:
        context.close()
