"""The blueprint's WebSocket client (``<prefix>/websocket.js``) in Debian's Chromium (issue 22).

Pages of ``tests/apps/ws_page.py`` on servers with gevent-websocket's
handler: the seed walkthrough over WebSocket, seven pages of one origin,
a server restart resumed with nothing missed, a revoked page stopped for good.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import TIMEOUT, received, wait_received
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ProcessServer, free_port

_names = itertools.count()


def serve(port: int, log: Path, app: str = "basic", **env: str) -> ProcessServer:
    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys\n"
        "from gevent.pywsgi import WSGIServer\n"
        "from geventwebsocket.handler import WebSocketHandler\n"
        f"from tests.apps.{app} import create_app\n"
        f"WSGIServer(('127.0.0.1', {port}), create_app(), handler_class=WebSocketHandler).serve_forever()\n"
    )
    return ProcessServer([PYTHON, "-c", script], port, env=env, log=log)


def post(port: int, path: str, **fields: Any) -> Any:
    body = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=10) as response:
        return json.loads(response.read())


def wait_open(page: Page) -> None:
    page.wait_for_function("() => window.source && window.source.readyState === 1")


def open_page(context: Any, url: str) -> Page:
    page: Page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    wait_open(page)
    return page


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    running = serve(port, tmp_path_factory.mktemp("ws") / "server.log")
    yield port
    running.stop()


def test_the_seed_walkthrough_over_websocket(browser: Browser, server: int) -> None:
    channel = f"seed{next(_names)}"
    url = f"http://127.0.0.1:{server}/ws-page?channel={channel}"
    first = open_page(browser.new_context(), url)
    post(server, "/publish", data="Hello World!", channel=channel)
    assert [e["data"] for e in wait_received(first, 1)] == ["Hello World!"]
    second = open_page(browser.new_context(), url)
    assigned = post(server, "/publish", data="Hello World! (again)", id="1", channel=channel)["id"]
    for page in (first, second):
        page.wait_for_function("() => window.received.some(e => e.data === 'Hello World! (again)')")
    third = open_page(browser.new_context(), url)
    assert wait_received(third, 1) == [
        {"type": "message", "lastEventId": str(assigned), "data": "Hello World! (again)"}
    ]
    assert [e["data"] for e in received(second)] == ["Hello World! (again)"], "a data-only event is not stored"
    assert [e["data"] for e in received(first)] == ["Hello World!", "Hello World! (again)"]


def test_seven_pages_of_one_http11_origin_all_receive_live_events(browser: Browser, server: int) -> None:
    channel = f"seven{next(_names)}"
    context = browser.new_context()  # one profile: one pool of six HTTP/1.1 connections per origin
    pages = [open_page(context, f"http://127.0.0.1:{server}/ws-page?channel={channel}") for _ in range(7)]
    post(server, "/publish", data="to all seven", channel=channel)
    for page in pages:
        assert wait_received(page, 1) == [{"type": "message", "lastEventId": "", "data": "to all seven"}]


def test_a_server_restart_is_resumed_with_nothing_missed(browser: Browser, tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)
    port, other = free_port(), free_port()
    env = {"SSE_REDIS_URL": redis_server.url}
    serving = serve(port, tmp_path / "a.log", **env)
    publisher = serve(other, tmp_path / "b.log", **env)
    try:
        page = open_page(browser.new_context(), f"http://127.0.0.1:{port}/ws-page?channel=r")
        ids = [post(other, "/publish", data="before", id="1", channel="r")["id"]]
        wait_received(page, 1)
        serving.stop()
        page.wait_for_function("() => window.source.readyState === 0")  # reconnecting
        ids += [post(other, "/publish", data=f"while down {n}", id="1", channel="r")["id"] for n in range(3)]
        serving = serve(port, tmp_path / "a2.log", **env)
        page.wait_for_function("() => window.received.length >= 4", timeout=20_000)
        ids.append(post(other, "/publish", data="after", id="1", channel="r")["id"])
        got = wait_received(page, 5)
        assert [e["lastEventId"] for e in got] == [str(i) for i in ids], "each once, in order"
        assert page.evaluate("() => window.opens") >= 2
    finally:
        serving.stop()
        publisher.stop()
        redis_server.stop()


def test_a_revoked_page_stops_for_good_while_another_goes_on(browser: Browser, tmp_path: Path) -> None:
    port = free_port()
    running = serve(port, tmp_path / "server.log", app="access")
    try:
        alice = open_page(browser.new_context(), f"http://127.0.0.1:{port}/ws-page?user=alice&channel=n")
        bob = open_page(browser.new_context(), f"http://127.0.0.1:{port}/ws-page?user=bob&channel=n")
        post(port, "/ban", user="alice")
        alice.wait_for_function("() => window.source.readyState === 2")  # 4000, then refused: 4403
        assert alice.evaluate("() => window.source.closeInfo.code") == 4403
        post(port, "/publish", data="for bob", channel="n")
        assert [e["data"] for e in wait_received(bob, 1)] == ["for bob"]
        assert received(alice) == []
        assert bob.evaluate("() => window.source.readyState") == 1
    finally:
        running.stop()
