from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, sync_playwright

from flask_sse_stream import SSE
from tests.support import browser as chromium
from tests.support.client import StreamClient
from tests.support.servers import ThreadServer


@pytest.fixture
def make_app() -> Callable[..., tuple[Flask, SSE]]:
    """``make_app(**config)``: a Flask app with ``SSE`` set up on it."""

    def make(**config: Any) -> tuple[Flask, SSE]:
        app = Flask(__name__)
        app.config.update(config)
        sse = SSE(app)
        return app, sse

    return make


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], ThreadServer]]:
    """``serve(app)``: the app on gevent's WSGIServer on a free port, stopped after the test."""
    servers: list[ThreadServer] = []

    def start(app: Flask) -> ThreadServer:
        server = ThreadServer(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def client_for() -> Iterator[Callable[..., StreamClient]]:
    """``client_for(port, path, headers)``: a StreamClient closed after the test."""
    clients: list[StreamClient] = []

    def connect(
        port: int, path: str | bytes = "/stream", headers: dict[str, str] | None = None, **kw: Any
    ) -> StreamClient:
        client = StreamClient(port, path, headers, **kw)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, launched once per test module (see tests/support/browser.py)."""
    with sync_playwright() as playwright:
        launched = chromium.launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """``new_page()``: a blank page in a context of its own, closed after the test."""
    pages: list[Page] = []

    def new() -> Page:
        page = chromium.new_page(browser)
        pages.append(page)
        return page

    yield new
    for page in pages:
        page.context.close()
