"""The publish endpoint under abuse: wrong tokens logged quietly, bodies that never come, bodies left unread.

Each case runs on gevent's ``WSGIServer`` (as ``serve`` runs it) and on
werkzeug's threaded development server, whose requests wait in plain OS
threads: the deadline must end a read wherever it waits.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.support.servers import WerkzeugServer

TOKEN = "publish-token-0123456789"
#: Seconds the publish endpoint waits for a body in these tests (SSE_PUBLISH_TIMEOUT).
TIMEOUT = 0.5


@pytest.fixture(params=["gevent", "werkzeug"])
def port_of(request, serve) -> Iterator[Callable[[Flask], int]]:
    servers: list[WerkzeugServer] = []

    def start(app: Flask) -> int:
        if request.param == "gevent":
            return serve(app).port
        server = WerkzeugServer(app)
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.stop()


def raw_request(port: int, head: bytes, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + b"\r\n\r\n" + body)
    return sock


def publish_head(length: int, token: str = TOKEN) -> bytes:
    return (
        b"POST /stream/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d" % (token.encode(), length)
    )


def read_answer(sock: socket.socket, until_closed: bool = True) -> tuple[int, dict[str, Any], bool]:
    """The status and JSON of the answer, and (``until_closed``) whether the server then closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"the connection closed before an answer: {data!r}"
        data += part
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers.get("Content-Length") or headers.get("content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    closed = False
    if not until_closed:
        return int(lines[0].split(" ")[1]), json.loads(body[:length]), closed
    try:
        closed = body[length:] == b"" and sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    return int(lines[0].split(" ")[1]), json.loads(body[:length]), closed


@pytest.fixture
def app(make_app) -> Flask:
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN, SSE_PUBLISH_TIMEOUT=TIMEOUT)
    return app


def test_a_body_that_never_comes_is_408_at_the_deadline_and_the_connection_closes(app, port_of) -> None:
    with raw_request(port_of(app), publish_head(100)) as sock:
        status, answer, closed = read_answer(sock)
    assert status == 408
    assert "SSE_PUBLISH_TIMEOUT" in answer["error"] and "0.5 s" in answer["error"]
    assert closed


def test_a_body_dripped_a_byte_at_a_time_is_cut_at_the_deadline(app, port_of) -> None:
    body = json.dumps({"data": "x" * 200}).encode()
    with raw_request(port_of(app), publish_head(len(body))) as sock:
        started = time.monotonic()
        sock.settimeout(0.05)
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
                assert sock.recv(65536, socket.MSG_PEEK)  # an answer came: stop dripping
                break
            except TimeoutError:
                continue  # no answer yet: one more byte, about every 50 ms
            except OSError:
                break  # the server closed the connection
        assert time.monotonic() - started < len(body) * 0.05, "the whole body was sent: no deadline cut it"
        sock.settimeout(10)
        status, _, closed = read_answer(sock)
    assert (status, closed) == (408, True)


def test_a_body_in_pieces_within_the_deadline_is_published(make_app, port_of, client_for) -> None:
    app, sse = make_app(SSE_PUBLISH_TOKEN=TOKEN)
    port = port_of(app)
    stream = client_for(port)
    body = json.dumps({"data": "in pieces"}).encode()
    with raw_request(port, publish_head(len(body)), body[:5]) as sock:
        sock.sendall(body[5:])
        status, answer, _ = read_answer(sock, until_closed=False)
    assert (status, answer) == (200, {"id": None})
    assert stream.next_event().data == "in pieces"


@pytest.mark.parametrize("token", ["wrong-token-0123456789", TOKEN])
def test_a_refused_request_with_a_body_left_unsent_does_not_hold_the_connection(make_app, port_of, token) -> None:
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN)
    head = publish_head(100, token).replace(b"application/json", b"text/plain")  # 401, or 415 with the token
    with raw_request(port_of(app), head) as sock:
        status, _, closed = read_answer(sock)
    assert (status, closed) == (401 if token != TOKEN else 415, True)


def test_stats_with_a_body_left_unsent_does_not_hold_the_connection(app, port_of) -> None:
    head = publish_head(100).replace(b"POST /stream/publish", b"GET /stream/stats")
    with raw_request(port_of(app), head) as sock:
        status, answer, closed = read_answer(sock)
    assert (status, closed) == (200, True)
    assert answer["streams"] == 0


def test_a_flood_of_wrong_tokens_logs_one_line(app, port_of, caplog) -> None:
    port = port_of(app)
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        for n in range(20):
            with raw_request(port, publish_head(0, f"wrong-token-{n:012d}")) as sock:
                assert read_answer(sock, until_closed=False)[0] == 401
    lines = [r.getMessage() for r in caplog.records if "wrong token" in r.getMessage()]
    assert len(lines) == 1, lines
    assert TOKEN not in caplog.text and "wrong-token-" not in caplog.text
