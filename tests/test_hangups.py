"""A client that closes its connection frees its stream within about a second, without a write.

A browser's reload, or ``EventSource``'s own retry, opens a new stream right
after closing the old one: with a per-client limit of 1 it must get ``200``,
not ``429`` until the next keep-alive finds the old socket gone (on which
``EventSource`` would give up for good). Every server is tried: gevent's
``WSGIServer``, werkzeug's threaded development server (no monkey-patching)
and ``start_sse_tcp_port``. The keep-alive is a minute, so no write can
be what notices the departure.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flask_sse_stream import SSE, start_sse_tcp_port
from flask_sse_stream.hangups import departed
from tests.support.browser import load, new_page, wait_open, wait_received
from tests.support.client import StreamClient
from tests.support.servers import WerkzeugServer
from tests.support.waiting import wait_until

#: Seconds within which a departed client's stream must be gone.
FREED_WITHIN = 1.0


@pytest.fixture(params=["gevent", "werkzeug", "standalone"])
def served(request, serve, make_app) -> Iterator[Callable[..., tuple[SSE, int, str]]]:
    """``served(**config)``: ``(sse, port, path)`` of an app on one of the three servers."""
    stops: list[Any] = []

    def start(**config: Any) -> tuple[SSE, int, str]:
        app, sse = make_app(SSE_KEEPALIVE=60, **config)
        if request.param == "gevent":
            return sse, serve(app).port, "/stream"
        if request.param == "werkzeug":
            server = WerkzeugServer(app)
            stops.append(server.stop)
            return sse, server.port, "/stream"
        stop = start_sse_tcp_port(0, sse)
        stops.append(stop)
        return sse, stop.port, "/"

    yield start
    for stop in stops:
        stop()


def open_stream(port: int, path: str) -> StreamClient:
    client = StreamClient(port, path)
    assert client.status == 200
    assert client.next_chunk().startswith(b": flask_sse_stream")
    return client


def reset(client: StreamClient) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0), as a crashed tab or a proxy may."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()


def freed_within(sse: SSE, seconds: float, left: int = 0) -> float:
    """Seconds until ``sse`` counts ``left`` streams (its connections, stats and count_streams agree)."""
    started = time.monotonic()
    wait_until(lambda: len(sse.connections) == left, timeout=seconds, what=f"{left} streams left")
    took = time.monotonic() - started
    assert sse.stats["streams"] == left
    assert sse.count_streams() == left
    return took


@pytest.mark.parametrize("close", ["fin", "rst"])
def test_a_closed_clients_stream_is_freed_without_a_write(served, close: str) -> None:
    sse, port, path = served()
    clients = [open_stream(port, path) for _ in range(3)]
    assert sse.count_streams() == 3
    if close == "fin":
        clients[0].close()
    else:
        reset(clients[0])
    freed_within(sse, FREED_WITHIN, left=2)
    for client in clients[1:]:
        client.close()
    freed_within(sse, FREED_WITHIN)


def test_a_reload_gets_200_at_a_per_client_limit_of_one(served) -> None:
    sse, port, path = served(SSE_MAX_CONNECTIONS_PER_CLIENT=1)
    client = open_stream(port, path)
    for _ in range(5):  # what a browser does on reload: close, and open again at once
        client.close()
        client = open_stream(port, path)
    assert len(sse.connections) == 1
    sse.send_new_event(data="still served")
    assert client.next_event(timeout=2).data == "still served"
    client.close()
    freed_within(sse, FREED_WITHIN)


RELOADING_PAGE = """<!doctype html>
<title>reloads</title>
<script>
  window.received = [];
  window.errors = 0;
  const source = new EventSource("/stream");
  window.source = source;
  source.onerror = () => { window.errors += 1; };
  source.onmessage = (event) => {
    window.received.push({type: event.type, lastEventId: event.lastEventId, data: event.data});
  };
</script>
"""


def test_chromium_reloading_a_page_at_a_per_client_limit_of_one_keeps_its_stream(make_app, serve, browser) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS_PER_CLIENT=1, SSE_KEEPALIVE=60)
    app.add_url_rule("/", "page", lambda: RELOADING_PAGE)
    port = serve(app).port
    page = new_page(browser)
    try:
        load(page, f"http://127.0.0.1:{port}/")
        for _ in range(5):
            page.reload()  # closes the old stream's connection and opens a new one at once
            wait_open(page)
        assert page.evaluate("window.errors") == 0  # never a 429, on which EventSource gives up
        assert sse.stats["streams_refused_by_reason"]["client_limit"] == 0
        sse.send_new_event(data="after five reloads")
        assert [event["data"] for event in wait_received(page, 1)] == ["after five reloads"]
    finally:
        page.context.close()
    wait_until(lambda: len(sse.connections) == 0, timeout=FREED_WITHIN, what="the closed page's stream to be freed")


@pytest.mark.parametrize("tls", [False, True])
def test_a_departed_peer_is_told_without_blocking_under_tls_too(tls: bool) -> None:
    ours, theirs = socket.socketpair()
    if tls:  # werkzeug's socket under `flask run --cert`: an SSLSocket, whose recv takes no flags
        ours = ssl.create_default_context().wrap_socket(
            ours, do_handshake_on_connect=False, server_hostname="localhost"
        )
    try:
        assert departed(ours) is False
        theirs.close()
        assert departed(ours) is True
    finally:
        ours.close()
