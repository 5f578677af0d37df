"""Hostile requests against running servers (SPEC 2, 5): no 500, no crash, no stuck worker.

Two targets, each started once for the module and each test run against both:

- ``gevent``: a Flask app on gevent's ``WSGIServer`` in a thread (as ``serve``
  runs it), CORS open to one origin (``SSE_CORS_ORIGINS=[GOOD]``); exceptions
  that reach Flask are recorded (``got_request_exception``);
- ``gunicorn``: ``gunicorn -k gevent -w 1`` serving ``tests/apps/basic.py``
  (no CORS), its log read for tracebacks and its one worker's pid watched.

Requests go out as raw bytes over sockets: what a browser would never send.
After every case a fresh, ordinary stream must open and receive an event
published through ``POST /publish`` within a second, from the same worker.

The servers' own limits answer before the library sees a request: gevent
answers ``414`` for a request line of 8 KB or more and ``400`` for a header
line over 64 KB or more than 100 headers; gunicorn has
``limit_request_line`` 4094, ``limit_request_field_size`` 8190 (``431``) and
``limit_request_fields`` 100. Those answers are fine; a ``500`` never is.
The library's own ``400``/``403``/``405``/``503`` are plain text naming the problem.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask, current_app, got_request_exception, jsonify, request

from flask_sse_stream import SSE
from tests.support.client import StreamClient
from tests.support.servers import PYTHON, ProcessServer, ThreadServer, free_port

GOOD = "https://good.example"
#: The gevent target's SSE_PUBLISH_TOKEN: its POST /stream/publish endpoint exists.
TOKEN = "hostile-test-token-0123456789"
#: Statuses a hostile request may get; 5xx never (the library's 503 is for load only).
ACCEPTABLE = {200, 204, 400, 403, 404, 405, 408, 414, 431}
_health = itertools.count()


# -- the two targets ----------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    #: The longest request line the server takes (CRLF excluded).
    request_line_limit: int
    #: Whether ``GOOD`` is an allowed CORS origin.
    cors: bool
    sse: SSE | None = None
    errors: list[str] = field(default_factory=list)
    server: Any = None
    worker: int | None = None
    #: A stream of channel "watched" (gevent target): what a rejected publish must never reach.
    watcher: StreamClient | None = None

    def publish(
        self, data: str, channel: str = "sse", with_id: bool = False, timeout: float = 5.0
    ) -> tuple[Any, float]:
        """``POST /publish`` on a new connection: the answer and the seconds it took."""
        body = urlencode({"data": data, "channel": channel, "id": "1" if with_id else ""})
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("POST", "/publish", body, {"Content-Type": "application/x-www-form-urlencoded"})
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        assert response.status == 200, f"{self.name}: /publish answered {response.status} {answer!r}"
        return json.loads(answer), time.monotonic() - started

    def problems(self) -> list[str]:
        """What went wrong inside the server: exceptions in the app, tracebacks, a new worker."""
        found = list(self.errors)
        if self.server is not None:
            log = self.server.output
            found += [line for line in log.splitlines() if "Traceback" in line or "Exception on" in line]
            if self.server.process.poll() is not None:
                found.append(f"gunicorn exited with {self.server.process.returncode}")
        return found

    def healthy(self) -> None:
        """A fresh stream opens, gets an event within a second, on the same worker; nothing went wrong."""
        channel = f"health-{next(_health)}"
        with StreamClient(self.port, f"/stream?channel={channel}", timeout=5) as client:
            assert client.status == 200, f"{self.name}: a fresh stream got {client.status}"
            if self.worker is not None:
                assert int(client.headers["x-worker"]) == self.worker, f"{self.name}: the worker was replaced"
            started = time.monotonic()
            self.publish("ping", channel)
            message = client.next_event(timeout=1.0)
            took = time.monotonic() - started
        assert message.data == "ping"
        assert took < 1.0, f"{self.name}: the event took {took:.2f} s"
        assert self.problems() == [], f"{self.name}: {self.problems()}"


def gevent_app(errors: list[str]) -> tuple[Flask, SSE]:
    app = Flask(__name__)
    app.config.update(SSE_CORS_ORIGINS=[GOOD], SSE_KEEPALIVE=5, SSE_PUBLISH_TOKEN=TOKEN)
    sse = SSE(app)

    @app.post("/publish")
    def publish() -> Any:
        values = request.values
        assigned = current_app.sse.send_new_event(  # type: ignore[attr-defined]
            data=values.get("data"), id=values.get("id") == "1", channel=values.get("channel") or "sse"
        )
        return jsonify(id=assigned)

    @sse.authorize
    def not_private(channel: str) -> bool:
        return not channel.startswith("private")

    def record(sender: Flask, exception: BaseException, **extra: Any) -> None:
        errors.append(f"{request.method} {request.full_path}: {exception!r}")

    got_request_exception.connect(record, app, weak=False)
    return app, sse


@pytest.fixture(scope="module")
def gevent_target() -> Iterator[Target]:
    errors: list[str] = []
    app, sse = gevent_app(errors)
    server = ThreadServer(app)
    # gevent.pywsgi: MAX_REQUEST_LINE = 8192, line terminator included.
    target = Target("gevent", server.port, 8190, cors=True, sse=sse, errors=errors)
    with StreamClient(server.port, "/stream?channel=watched", timeout=5) as watcher:
        target.watcher = watcher
        yield target
    server.stop()


@pytest.fixture(scope="module")
def gunicorn_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    command = [
        PYTHON, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--no-control-socket", "--graceful-timeout", "2",
        "-b", f"127.0.0.1:{port}", "tests.apps.basic:create_app()",
    ]  # fmt: skip
    server = ProcessServer(command, port, env={"SSE_KEEPALIVE": "5"}, log=Path(log))
    target = Target("gunicorn", port, 4094, cors=False, server=server)
    try:
        with StreamClient(port, "/stream") as client:
            target.worker = int(client.headers["x-worker"])
        yield target
    finally:
        server.stop()


@pytest.fixture(params=["gevent", "gunicorn"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    chosen: Target = request.getfixturevalue(f"{request.param}_target")
    yield chosen
    chosen.healthy()


# -- raw exchanges ------------------------------------------------------------------


@dataclass
class Answer:
    #: None: the server closed (or reset) the connection without an answer.
    status: int | None
    headers: dict[str, str]
    #: The whole body of a sized answer; the first chunk of a stream.
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def plain_text(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/plain")


def exchange(port: int, data: bytes, timeout: float = 5.0) -> Answer:
    """Send ``data`` as is, read the answer's head and its body (or a stream's first chunk), close.

    A ``HEAD`` request or a ``204`` has no body; any other answer without
    Content-Length or chunks is an HTTP/1.0 stream, whose first bytes are read.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading it all: read what it said
        raw = b""
        deadline = time.monotonic() + timeout

        def fill() -> bool:
            nonlocal raw
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                more = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                more = b""
            raw += more
            return bool(more)

        while b"\r\n\r\n" not in raw:
            if not fill():
                if raw:
                    raise AssertionError(f"an incomplete answer: {raw!r}")
                return Answer(None, {}, b"")
        head, rest = raw.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ")[1])
        if data.startswith(b"HEAD ") or status == 204:
            body = b""
        elif "content-length" in headers:
            size = int(headers["content-length"])
            while len(rest) < size and fill():
                rest = raw.split(b"\r\n\r\n", 1)[1]
            body = rest[:size]
        elif headers.get("transfer-encoding") == "chunked":
            while b"\r\n" not in rest or len(rest.split(b"\r\n", 1)[1]) < int(rest.split(b"\r\n", 1)[0], 16):
                if not fill():
                    break
                rest = raw.split(b"\r\n\r\n", 1)[1]
            size_line, _, chunk = rest.partition(b"\r\n")
            body = chunk[: int(size_line, 16)]
        else:  # an HTTP/1.0 stream, delimited by the end of the connection
            while not rest and fill():
                rest = raw.split(b"\r\n\r\n", 1)[1]
            body = rest
        return Answer(status, headers, body)


def get(target: Target, path: bytes, *headers: bytes, method: bytes = b"GET") -> Answer:
    lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: hostile.test", *headers]
    return exchange(target.port, b"\r\n".join(lines) + b"\r\n\r\n")


def check_status(target: Target, answer: Answer, allowed: set[int] = ACCEPTABLE) -> None:
    assert answer.status is None or answer.status in allowed, f"{target.name}: {answer}"


def library_refusal(target: Target, answer: Answer, status: int, *phrases: str) -> None:
    """The library's own answer: ``status``, plain text, naming the problem."""
    assert answer.status == status, f"{target.name}: {answer}"
    assert answer.plain_text, f"{target.name}: not plain text: {answer}"
    for phrase in phrases:
        assert phrase in answer.text, f"{target.name}: {answer.text!r} does not say {phrase!r}"


def stream_opened(target: Target, answer: Answer) -> None:
    assert answer.status == 200, f"{target.name}: {answer}"
    assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert answer.body.startswith(b":"), answer.body


# -- malformed request lines and headers -----------------------------------------------

MALFORMED = {
    "blank lines only": b"\r\n\r\n",
    "method only": b"GET\r\n\r\n",
    "no version (HTTP/0.9)": b"GET /stream\r\n\r\n",
    "HTTP/9.9": b"GET /stream HTTP/9.9\r\nHost: x\r\n\r\n",
    "binary garbage": b"\x00\x01\x02\xff\xfe\x16\x03\x01\r\n\r\n",
    "a TLS hello": bytes.fromhex("16030100a5010000a10303") + os.urandom(40) + b"\r\n\r\n",
    "a header without a colon": b"GET /stream HTTP/1.1\r\nHost\r\n\r\n",
    "a header without a name": b"GET /stream HTTP/1.1\r\nHost: x\r\n: value\r\n\r\n",
    "obsolete line folding": b"GET /stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n folded\r\n\r\n",
    "negative Content-Length": b"GET /stream HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "Content-Length and chunked": b"GET /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzzz",
    "a broken chunked body": b"GET /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "bare LF line ends": b"GET /stream HTTP/1.1\nHost: x\n\n",
    "a bare CR in a header": b"GET /stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\rX-Injected: 1\r\n\r\n",
    "double spaces": b"GET  /stream  HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute form": b"GET http://hostile.test/stream HTTP/1.1\r\nHost: x\r\n\r\n",
    "asterisk form": b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ASCII path": b"GET /str\xc3\xa9am HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid UTF-8 path": b"GET /stream\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "NUL in a header": b"GET /stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\x002\r\n\r\n",
    "no Host": b"GET /stream HTTP/1.1\r\n\r\n",
    "a 5,000-character method": b"A" * 5000 + b" /stream HTTP/1.1\r\nHost: x\r\n\r\n",
    "a request line of spaces": b" " * 100 + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_request_gets_no_500(target: Target, case: str) -> None:
    answer = exchange(target.port, MALFORMED[case])
    check_status(target, answer)
    assert "x-injected" not in answer.headers


# -- methods -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "FROBNICATE", "GETS"])
def test_every_other_method_gets_the_librarys_plain_text_405(target: Target, method: str) -> None:
    answer = get(target, b"/stream", method=method.encode())
    library_refusal(target, answer, 405, method, "GET")
    # The Allow header names what the stream answers, not methods that get 405 too.
    assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}, answer


def test_head_answers_without_opening_a_stream(target: Target) -> None:
    before = len(target.sse.connections) if target.sse else None
    answer = exchange(target.port, b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 200, answer
    if target.sse is not None:
        assert len(target.sse.connections) == before


def test_lowercase_method_is_refused_or_served_as_get(target: Target) -> None:
    # gevent's parser takes the method as written (Flask then upper-cases it);
    # gunicorn refuses it. Either is fine.
    answer = get(target, b"/stream", method=b"get")
    check_status(target, answer, {200, 400, 405})


# -- query strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, phrase",
    [
        (b"channel=%ff%fe", "UTF-8"),
        (b"channel=%c3", "UTF-8"),
        (b"channel=%ed%a0%80", "UTF-8"),  # an encoded lone surrogate: not UTF-8
        (b"lastEventId=%ff", "UTF-8"),
        (b"channel=", "1 to 200"),
        (b"channel=a%00b", "control characters"),
        (b"channel=a%0d%0adata:%20injected", "control characters"),
        (b"channel=%1b%5b31m", "control characters"),
        (b"channel=a%7f", "control characters"),
        (b"channel=a%c2%85", "control characters"),  # U+0085, a C1 control
        (b"channel=" + b"c" * 201, "1 to 200"),
        (b"&".join(b"channel=c%d" % n for n in range(17)), "at most 16"),
    ],
    ids=lambda value: value.decode("latin-1")[:40] if isinstance(value, bytes) else value,
)
def test_bad_query_gets_the_librarys_plain_text_400(target: Target, query: bytes, phrase: str) -> None:
    library_refusal(target, get(target, b"/stream?" + query), 400, phrase)


@pytest.mark.parametrize(
    "query",
    [b"channel=\xff\xfe", b"channel=a\x01b", b"channel=a\x7fb", b"channel=a\tb", b"channel=\xc3\xa9"],
    ids=["raw invalid UTF-8", "raw SOH", "raw DEL", "raw tab", "raw UTF-8 e-acute"],
)
def test_raw_bytes_in_the_query_are_refused_by_the_server_or_the_library(target: Target, query: bytes) -> None:
    answer = get(target, b"/stream?" + query)
    check_status(target, answer, {200, 400})
    if answer.status == 400 and answer.plain_text:  # the library's answer, not the server's
        assert "UTF-8" in answer.text or "control characters" in answer.text, answer
    if answer.status == 200:
        assert query == b"channel=\xc3\xa9", f"{target.name}: {answer}"


@pytest.mark.parametrize("query", [b"channel=abc%", b"channel=%", b"channel=%zz", b"channel=a%2", b"%=%&=&&"])
def test_stray_percent_signs_are_taken_literally(target: Target, query: bytes) -> None:
    answer = get(target, b"/stream?" + query)
    stream_opened(target, answer)


def test_one_channel_repeated_up_to_the_request_line_limit_counts_once(target: Target) -> None:
    prefix, suffix = b"GET /stream?", b" HTTP/1.1"
    repeats = (target.request_line_limit - len(prefix) - len(suffix) - 10) // len(b"channel=long&")
    assert repeats > 300
    path = b"/stream?" + b"channel=long&" * repeats
    with StreamClient(target.port, path, timeout=5) as client:
        assert client.status == 200, client.body()
        target.publish("for long", "long")
        assert client.next_event(timeout=2).data == "for long"
        if target.sse is not None:
            assert ("long",) in [connection.channels for connection in target.sse.connections]

    over = get(target, b"/stream?" + b"channel=long&" * (repeats + 20))
    check_status(target, over, {400, 414})


def test_sixteen_channels_of_two_hundred_characters_each_are_served(target: Target) -> None:
    channels = [f"{n:02d}" + "c" * 198 for n in range(16)]
    path = "/stream?" + "&".join(f"channel={channel}" for channel in channels)
    assert len(path) < target.request_line_limit - 20
    with StreamClient(target.port, path, timeout=5) as client:
        assert client.status == 200, client.body()
        for channel in (channels[0], channels[15]):
            target.publish(channel, channel)
            assert client.next_event(timeout=2).data == channel


@pytest.mark.parametrize(
    "query",
    [b"channel=private", b"channel=ok&channel=private-room", b"channel=%70rivate", b"channel=private&channel=private"],
)
def test_refused_channel_gets_the_librarys_plain_text_403(gevent_target: Target, query: bytes) -> None:
    # Only the gevent target has an authorizer (tests/apps/basic.py has none).
    library_refusal(gevent_target, get(gevent_target, b"/stream?" + query), 403, "'private")
    gevent_target.healthy()


# -- Last-Event-ID ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored_channel() -> Iterator[dict[str, list[int]]]:
    """Per target: the ids of three events stored on channel ``lei`` before the tests read it."""
    yield {}


@pytest.mark.parametrize(
    "value",
    [b"-1", b"abc", b"1" * 30, b"\xff\xfe\xc3\xa9", b"1.5", b"0x10", b"+1", b" ", b"1 2", b"\xd9\xa1", b"9" * 8000],
    ids=["-1", "abc", "30 digits", "non-ASCII", "1.5", "hex", "+1", "space", "two numbers", "arabic one", "8000 nines"],
)
def test_unusable_last_event_id_replays_the_whole_store(
    target: Target, stored_channel: dict[str, list[int]], value: bytes
) -> None:
    if target.name not in stored_channel:
        stored_channel[target.name] = [target.publish(f"stored {n}", "lei", with_id=True)[0]["id"] for n in range(3)]
    ids = stored_channel[target.name]
    path = b"/stream?channel=lei"
    with StreamClient(target.port, path, {"Last-Event-ID": value.decode("latin-1")}, timeout=5) as client:
        assert client.status == 200, client.body()
        got = [(message.id, message.event) for message in client.events(3, timeout=2)]
    assert got == [(id, "message") for id in ids], f"{target.name}: Last-Event-ID {value[:40]!r}"


@pytest.mark.parametrize("size", [8000, 64 * 1024])
def test_huge_last_event_id_is_refused_by_the_server_or_ignored(target: Target, size: int) -> None:
    answer = get(target, b"/stream", b"Last-Event-ID: " + b"7" * size)
    check_status(target, answer, {200, 400, 431})
    if answer.status == 200:
        stream_opened(target, answer)


# -- Origin ------------------------------------------------------------------------------------

HOSTILE_ORIGINS = {
    "null": b"null",
    "another site": b"https://evil.example",
    "a suffix": b"https://good.example.evil.example",
    "a trailing slash": b"https://good.example/",
    "upper case": b"HTTPS://GOOD.EXAMPLE",
    "a star": b"*",
    "a list": b"https://good.example https://evil.example",
    "a NUL": b"https://good.example\x00.evil.example",
    "latin-1 bytes": b"https://g\xf6od.example",
    "8 KB": b"https://" + b"e" * 8000 + b".example",
    "a bare CR": b"https://good.example\rX-Injected: 1",
}


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS, ids=list(HOSTILE_ORIGINS))
@pytest.mark.parametrize("method", [b"GET", b"OPTIONS"])
def test_hostile_origin_gets_no_cors_grant(target: Target, origin: str, method: bytes) -> None:
    answer = get(target, b"/stream", b"Origin: " + HOSTILE_ORIGINS[origin], method=method)
    check_status(target, answer, {200, 204, 400, 431})
    assert "x-injected" not in answer.headers
    granted = answer.headers.get("access-control-allow-origin")
    # gevent's parser ends a header value at a bare CR, so "a bare CR" reaches
    # the app as exactly GOOD: then, and only then, GOOD may be echoed.
    if granted is not None:
        assert target.cors and granted == GOOD and origin == "a bare CR", f"{target.name}: {answer}"
    for name, value in answer.headers.items():
        assert "evil" not in value, f"{target.name}: {name}: {value}"


def test_the_allowed_origin_is_echoed_with_credentials(target: Target) -> None:
    answer = get(target, b"/stream", b"Origin: " + GOOD.encode())
    stream_opened(target, answer)
    if target.cors:
        assert answer.headers["access-control-allow-origin"] == GOOD
        assert answer.headers["access-control-allow-credentials"] == "true"
    else:
        assert "access-control-allow-origin" not in answer.headers


# -- big and many headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, allowed",
    [
        ([b"X-Big: " + b"a" * 64 * 1024], {400, 431}),
        ([b"Cookie: " + b"c" * 64 * 1024], {400, 431}),
        ([b"X-Big: " + b"a" * 8000], {200}),
        ([b"X-N%d: v" % n for n in range(2000)], {400, 431}),
        ([b"X-N%d: v" % n for n in range(90)], {200}),
        ([b"Last-Event-ID: 1"] * 90, {200, 400}),
        ([b"Origin: " + GOOD.encode(), b"Origin: https://evil.example"], {200, 400}),
    ],
    ids=[
        "64 KB value",
        "64 KB cookie",
        "8 KB value",
        "2,000 headers",
        "90 headers",
        "90 Last-Event-IDs",
        "two Origins",
    ],
)
def test_big_or_many_headers_get_no_500(target: Target, headers: list[bytes], allowed: set[int]) -> None:
    answer = get(target, b"/stream", *headers)
    check_status(target, answer, allowed)
    if answer.status == 200:
        stream_opened(target, answer)
        assert "evil" not in answer.headers.get("access-control-allow-origin", "")


# -- connections that never finish their request --------------------------------------------------


def test_half_open_connections_do_not_stop_the_server(target: Target) -> None:
    idle = [socket.create_connection(("127.0.0.1", target.port)) for _ in range(200)]
    halves = [b"GET /stre", b"GET /stream?channel=a HTTP/1.1\r\n", b"GET /stream HTTP/1.1\r\nHost: x\r\nLast-Ev"]
    partial = []
    for half in halves * 3:
        sock = socket.create_connection(("127.0.0.1", target.port))
        sock.sendall(half)
        partial.append(sock)
    try:
        time.sleep(0.2)
        for _ in range(3):
            target.healthy()
        took = [target.publish("while half-open")[1] for _ in range(10)]
        assert max(took) < 0.5, f"{target.name}: /publish took up to {max(took):.2f} s"
    finally:
        for sock in idle + partial:
            sock.close()


def test_slowloris_request_lines_do_not_stop_the_server(target: Target) -> None:
    # gunicorn's async workers give a request `keepalive` seconds (2) to arrive
    # and then close the connection; gevent's WSGIServer waits. Either is fine,
    # as long as the server goes on serving everyone else meanwhile.
    request = b"GET /stream?channel=slow HTTP/1.1\r\nHost: x\r\n\r\n"
    dripped = 12  # bytes sent one at a time, 0.25 s apart: 3 s
    socks = [socket.create_connection(("127.0.0.1", target.port), timeout=5) for _ in range(20)]
    cut: set[socket.socket] = set()
    stop = threading.Event()

    def drip() -> None:
        for n in range(dripped):
            if stop.wait(0.25):
                return
            for sock in socks:
                if sock not in cut:
                    try:
                        sock.sendall(request[n : n + 1])
                    except OSError:
                        cut.add(sock)  # the server gave up on it

    dripper = threading.Thread(target=drip)
    dripper.start()
    try:
        checks = 0
        while dripper.is_alive():
            target.healthy()
            checks += 1
            time.sleep(0.3)
        assert checks >= 5
        # The slow requests, once complete, are served or closed, never answered 5xx.
        for sock in socks:
            try:
                sock.sendall(request[dripped:])
                head = sock.recv(4096)
            except OSError:
                head = b""
            assert head == b"" or head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 408", b"HTTP/1.1 400")), head[:200]
    finally:
        stop.set()
        dripper.join(5)
        for sock in socks:
            sock.close()


# -- the publish endpoint (gevent target: SSE_PUBLISH_TOKEN set) -----------------------------------


def publish_request(body: bytes, *headers: bytes, token: bytes | None = TOKEN.encode()) -> bytes:
    lines = [b"POST /stream/publish HTTP/1.1", b"Host: hostile.test", b"Content-Length: %d" % len(body)]
    if token is not None:
        lines.append(b"Authorization: Bearer " + token)
    if not any(header.lower().startswith(b"content-type:") for header in headers):
        lines.append(b"Content-Type: application/json")
    return b"\r\n".join([*lines, *headers]) + b"\r\n\r\n" + body


def event_body(**fields: Any) -> bytes:
    return json.dumps({"channel": "watched", "data": "leaked", **fields}).encode()


DEEP = b'{"channel": "watched", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
PUBLISH_CASES = {
    "no token": (publish_request(event_body(), token=None), 401),
    "a wrong token": (publish_request(event_body(), token=b"nope"), 401),
    "the token minus a character": (publish_request(event_body(), token=TOKEN[:-1].encode()), 401),
    "the token plus a character": (publish_request(event_body(), token=TOKEN.encode() + b"x"), 401),
    "the token in another scheme": (
        publish_request(event_body(), b"Authorization: Basic " + TOKEN.encode(), token=None),
        401,
    ),
    "non-ASCII token bytes": (publish_request(event_body(), token=b"\xff\xfe\xc3\xa9"), 401),
    "a 7 KB token": (publish_request(event_body(), token=b"t" * 7000), 401),
    "text/plain": (publish_request(event_body(), b"Content-Type: text/plain"), 415),
    "a 2 MB body": (publish_request(b'{"data": "' + b"x" * 2_000_000 + b'"}'), 413),
    "not JSON": (publish_request(b"{"), 400),
    "not UTF-8": (publish_request(b'{"channel": "watched", "data": "\xff"}'), 400),
    "a JSON list": (publish_request(b"[]"), 400),
    "NaN": (publish_request(b'{"channel": "watched", "data": NaN}'), 400),
    "100,000 levels of nesting": (publish_request(DEEP), 400),
    "CR LF in the event name": (publish_request(event_body(event="x\r\ndata: injected")), 400),
    "NUL in the event name": (publish_request(event_body(event="x\u0000")), 400),
    "a control character in the channel": (publish_request(event_body(channel="watched\n")), 400),
    "id as a string": (publish_request(event_body(id="true")), 400),
    "a negative retry": (publish_request(event_body(retry=-1)), 400),
    "retry true": (publish_request(event_body(retry=True)), 400),
    "retry with a line break": (publish_request(event_body(retry="1\ndata: injected")), 400),
    "an unknown field": (publish_request(event_body(extra=1)), 400),
}


@pytest.mark.parametrize("case", PUBLISH_CASES, ids=list(PUBLISH_CASES))
def test_hostile_publish_request_is_refused_and_sends_nothing(gevent_target: Target, case: str) -> None:
    request, status = PUBLISH_CASES[case]
    before = gevent_target.sse.stats["events_sent"]  # type: ignore[union-attr]
    answer = exchange(gevent_target.port, request)
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    assert json.loads(answer.body)["error"], answer
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer"), answer
        assert TOKEN not in answer.text
    assert gevent_target.sse.stats["events_sent"] == before  # type: ignore[union-attr]
    gevent_target.publish("sentinel", "watched")
    assert gevent_target.watcher.next_event(timeout=2).lines == ["data: sentinel"]  # type: ignore[union-attr]
    gevent_target.healthy()


def test_the_right_token_publishes(gevent_target: Target) -> None:
    answer = exchange(gevent_target.port, publish_request(event_body(data="welcome", event="hello", id=True)))
    assert answer.status == 200, answer
    message = gevent_target.watcher.next_event(timeout=2)  # type: ignore[union-attr]
    assert (message.event, message.data, message.id) == ("hello", "welcome", json.loads(answer.body)["id"])
