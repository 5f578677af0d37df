"""HTTP/1.0 clients, and servers that answer in HTTP/1.0, under monkey-patched servers that allow direct writes.

Direct writes frame events as HTTP/1.1 chunks themselves. They must be used
only where the server frames the response that way: a response without
chunked encoding (to an HTTP/1.0 request, or from a server that answers in
HTTP/1.0) must carry the bare event stream, delimited by the end of the
connection, as HTTP/1.0 frames a body.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from flask_sse_stream import SSE
from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ProcessServer, free_port

SERVERS = {
    "gevent": ["-m", "tests.apps.gevent_server"],
    "werkzeug-single": ["-m", "tests.apps.werkzeug_server", "{port}", "single"],
    "werkzeug-threaded": ["-m", "tests.apps.werkzeug_server", "{port}", "threaded"],
}
BARE = b": flask_sse_stream\n\ndata: one\n\ndata: two\n\n"
#: Keep-alives often enough that werkzeug's server without threads, busy with one
#: stream at a time, notices soon that a test's client has left.
KEEPALIVE = "0.2"


def body(client: StreamClient) -> bytes:
    """What the stream carried, keep-alive comments left out."""
    return b"".join(client.chunks).replace(b": keep-alive\n\n", b"")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sender(redis_server) -> Iterator[SSE]:
    app = Flask(__name__)  # held here: an SSE holds its apps weakly
    sse = SSE(app, redis_url=redis_server.url)
    yield sse
    sse.close()


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request, tmp_path_factory, redis_server, sender) -> Iterator[tuple[str, int, SSE]]:
    kind = request.param
    port = free_port()
    args = [arg.format(port=port) for arg in SERVERS[kind]]
    if kind == "gevent":
        args.append(str(port))
    log = tmp_path_factory.mktemp(kind) / "server.log"
    env = {"SSE_REDIS_URL": redis_server.url, "SSE_KEEPALIVE": KEEPALIVE}
    running = ProcessServer([PYTHON, *args], port, env=env, log=log)
    yield kind, port, sender
    running.stop()


def body_after_two_events(server: tuple[str, int, SSE], version: str, channel: str) -> StreamClient:
    _, port, sender = server
    client = StreamClient(port, f"/stream?channel={channel}", version=version)
    try:
        assert client.status == 200
        client.next_chunk()  # the opening: the stream is subscribed
        sender.send_new_event(data="one", channel=channel)
        sender.send_new_event(data="two", channel=channel)
        assert [client.next_event().data for _ in range(2)] == ["one", "two"]
    except BaseException:
        client.close()
        raise
    return client


def test_an_http_1_0_request_gets_the_bare_stream_ended_by_the_connection(server) -> None:
    kind = server[0]
    with body_after_two_events(server, "HTTP/1.0", f"{kind}-10") as client:
        if kind == "werkzeug-threaded":
            # werkzeug's threaded server answers every request in HTTP/1.1
            # with chunks, an HTTP/1.0 one too: framed as its head says.
            assert (client.version, client.headers["transfer-encoding"]) == ("HTTP/1.1", "chunked")
            return
        assert "transfer-encoding" not in client.headers
        assert body(client) == BARE


def test_an_http_1_1_request_is_framed_as_the_server_answers(server) -> None:
    kind = server[0]
    with body_after_two_events(server, "HTTP/1.1", f"{kind}-11") as client:
        if kind == "werkzeug-single":
            # Without threads werkzeug answers in HTTP/1.0, without chunks,
            # even to an HTTP/1.1 request: direct writes would add chunk
            # framing to a body that has none.
            assert client.version == "HTTP/1.0" and "transfer-encoding" not in client.headers
            assert body(client) == BARE
        else:
            assert client.headers["transfer-encoding"] == "chunked"
            assert body(client) == BARE  # de-chunked by the client, strictly
