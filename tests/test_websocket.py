"""The stream over a WebSocket (issue 22), against real servers, with websocket-client as the client.

The basic app (``tests/apps/basic.py``) runs under gevent's ``WSGIServer`` with
gevent-websocket's ``WebSocketHandler`` and under ``gunicorn -k
GeventWebSocketWorker -w 1``; each test compares what a WebSocket receives
with what the SSE stream of the same channels receives, or checks one close
code of docs/websocket.rst. Access control, SIGTERM and four workers on Redis
are in tests/test_websocket_workers.py.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from websocket import ABNF

from tests.support.client import StreamClient
from tests.support.servers import PYTHON, ProcessServer, free_port
from tests.support.waiting import wait_until
from tests.support.ws import WsClient, close_all

WEBSOCKET_WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
KEEPALIVE = 0.5
QUEUE_SIZE = 64
_channels = itertools.count()


def command(kind: str, port: int) -> list[str]:
    if kind.startswith("gevent-ws"):
        return [PYTHON, "-m", "tests.apps.gevent_server", str(port), "websocket"]
    return [
        PYTHON, "-m", "gunicorn", "-k", WEBSOCKET_WORKER, "-w", "1", "--graceful-timeout", "5",
        "--no-control-socket", "-b", f"127.0.0.1:{port}", "tests.apps.basic:create_app()",
    ]  # fmt: skip


class Server:
    def __init__(self, kind: str, log: Any, **env: str) -> None:
        self.port = free_port()
        #: Streams of a channel that write directly, when one is open (none with SSE_DIRECT_WRITES off).
        self.direct = 0 if kind == "gevent-ws-threaded-writes" else 1
        self.process = ProcessServer(command(kind, self.port), self.port, env=env, log=log)

    def why(self) -> str:
        return f"\n--- server log ---\n{self.process.output}"

    def request(self, method: str, path: str, **params: Any) -> Any:
        body = urllib.parse.urlencode(params).encode() if method == "POST" else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def publish(self, **fields: Any) -> int | None:
        answer: int | None = self.request("POST", "/publish", **fields)["id"]
        return answer

    def streams(self) -> int:
        count: int = self.request("GET", "/info")["streams"]
        return count


@pytest.fixture(autouse=True)
def close_sockets() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture(scope="module", params=["gevent-ws", "gunicorn-ws", "gevent-ws-threaded-writes"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    kind: str = request.param
    env = {"SSE_KEEPALIVE": str(KEEPALIVE), "SSE_QUEUE_SIZE": str(QUEUE_SIZE)}
    if kind == "gevent-ws-threaded-writes":
        env["SSE_DIRECT_WRITES"] = "0"  # every write by the stream's own greenlet
    running = Server(kind, tmp_path_factory.mktemp(kind) / "server.log", **env)
    yield running
    running.process.stop()


@pytest.fixture
def channel() -> str:
    return f"ws-{next(_channels)}"


@pytest.fixture
def connect(server: Server) -> Iterator[Callable[..., WsClient]]:
    clients: list[WsClient] = []

    def open_one(query: str, **options: Any) -> WsClient:
        client = WsClient(server.port, f"/stream?{query}", **options)
        clients.append(client)
        return client

    yield open_one
    for client in clients:
        client.close()


def fields(message: Any) -> tuple[Any, ...]:
    return (str(message.id) if message.id is not None else None, message.event, message.data)


def test_the_same_events_ids_and_order_as_the_sse_stream(
    server: Server, connect: Callable[..., WsClient], client_for: Callable[..., StreamClient], channel: str
) -> None:
    query = f"channel={channel}&channel={channel}-b"
    sse = client_for(server.port, f"/stream?{query}")
    sse.next_chunk()
    ws = connect(query)
    wait_until(lambda: server.streams() == 2, what=f"both streams open{server.why()}")
    sent = [
        dict(data="one", id="1", channel=channel),
        dict(data="two\nlines", channel=f"{channel}-b"),
        dict(data=" leading space", event="note", id="1", channel=f"{channel}-b"),
        dict(data="é ✓ \u2028", channel=channel),
        dict(data="", id="1", channel=channel),
    ]
    ids = [server.publish(**event) for event in sent]
    got_sse = [fields(message) for message in sse.events(len(sent))]
    got_ws = [(e.get("id"), e.get("event", "message"), e["data"]) for e in ws.events(len(sent))]
    assert got_ws == [(*got[:1], "message" if got[1] == "message" else got[1], got[2]) for got in got_sse]
    assert [e[0] for e in got_ws] == [str(i) if i is not None else None for i in ids]
    assert got_ws[1][2] == "two\nlines", "data with a newline arrives as EventSource would give it"


def test_replay_to_a_late_socket_and_resume_from_last_event_id(
    server: Server, connect: Callable[..., WsClient], channel: str
) -> None:
    ids = [server.publish(data=f"n{i}", id="1", channel=channel) for i in range(3)]
    server.publish(data="live only", channel=channel)
    late = connect(f"channel={channel}")
    assert [(e["id"], e["data"]) for e in late.events(3)] == [(str(i), f"n{n}") for n, i in enumerate(ids)]
    resumed = connect(f"channel={channel}&lastEventId={ids[0]}")
    server.publish(data="live", channel=channel)
    assert [(e.get("id"), e["data"]) for e in resumed.events(3)] == [(str(ids[1]), "n1"), (str(ids[2]), "n2"),
                                                                   (None, "live")]  # fmt: skip


def test_an_unknown_resume_point_gets_the_reset_event_then_the_store(
    server: Server, connect: Callable[..., WsClient], channel: str
) -> None:
    stored = server.publish(data="kept", id="1", channel=channel)
    client = connect(f"channel={channel}&lastEventId={10**18}")
    assert client.events(2) == [{"event": "sse-reset", "data": ""}, {"id": str(stored), "data": "kept"}]


@pytest.mark.parametrize(
    ("query", "names"),
    [("channel=%00", "'\\x00'"), ("&".join(f"channel=c{i}" for i in range(17)), "at most 16"),
     ("channel=%ff", "UTF-8")],
)  # fmt: skip
def test_a_bad_request_closes_with_4400_naming_it(connect: Callable[..., WsClient], query: str, names: str) -> None:
    code, reason, before = connect(query).close_code()
    assert (code, before) == (4400, [])
    assert names in reason


def test_pings_keep_the_socket_alive_and_a_client_ping_is_answered(
    server: Server, connect: Callable[..., WsClient], channel: str
) -> None:
    client = connect(f"channel={channel}")
    opcode, _ = client.ws.recv_data_frame(True)
    assert opcode == ABNF.OPCODE_PING  # within KEEPALIVE seconds, with nothing sent
    client.ws.ping(b"hello")
    client.ws.send('{"ping": 1}')  # a browser's keep-alive: ignored
    opcode, frame = client.ws.recv_data_frame(True)
    while opcode == ABNF.OPCODE_PING:
        opcode, frame = client.ws.recv_data_frame(True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"hello")
    server.publish(data="still here", channel=channel)
    assert client.event() == {"data": "still here"}


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda ws: ws.send('{"subscribe": ["other"]}'), 1003),
        (lambda ws: ws.send_binary(b"\x00\x01"), 1003),
        (lambda ws: ws.send("x" * 5000), 1009),
        (lambda ws: ws.send_frame(ABNF.create_frame(b"\xff\xfe", ABNF.OPCODE_TEXT)), 1007),
        (lambda ws: ws.send_frame(ABNF.create_frame(b"part", ABNF.OPCODE_TEXT, fin=0)), 1003),
    ],
    ids=["text", "binary", "oversized", "not-utf8", "fragmented"],
)
def test_a_client_frame_other_than_a_ping_closes_the_socket_with_its_code(
    server: Server, connect: Callable[..., WsClient], channel: str, send: Callable[[Any], None], expected: int
) -> None:
    client = connect(f"channel={channel}")
    before = server.streams()
    send(client.ws)
    code, reason, _ = client.close_code()
    assert code == expected, reason
    wait_until(lambda: server.streams() == before - 1, what=f"the stream closed{server.why()}")


def test_a_socket_more_than_the_queue_behind_is_cut_and_others_go_on(
    server: Server, connect: Callable[..., WsClient], channel: str
) -> None:
    cut = connect(f"channel={channel}")
    other = connect(f"channel={channel}-other")
    wait_until(lambda: server.streams() >= 2, what=server.why())
    server.request("POST", "/burst", n=QUEUE_SIZE + 10, channel=channel)  # one turn: all pending at once
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            cut.event()  # what it had written, then the cut: no close frame
    server.publish(data="on", channel=f"{channel}-other")
    assert other.event() == {"data": "on"}


def test_an_upgrade_the_server_does_not_accept_is_told_what_to_run(
    client_for: Callable[..., StreamClient], tmp_path: Any
) -> None:
    port = free_port()
    plain = ProcessServer([PYTHON, "-m", "tests.apps.gevent_server", str(port)], port, log=tmp_path / "log")
    try:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
        client = client_for(port, "/stream", headers)
        assert client.status == 501
        assert b"WebSocketHandler" in client.body()
    finally:
        plain.stop()


def test_the_per_client_limit_closes_with_4429(tmp_path: Any) -> None:
    limited = Server("gevent-ws", tmp_path / "log", SSE_MAX_CONNECTIONS_PER_CLIENT="2")
    try:
        first, second = WsClient(limited.port, "/stream"), WsClient(limited.port, "/stream")
        code, reason, _ = WsClient(limited.port, "/stream").close_code()
        assert code == 4429 and "SSE_MAX_CONNECTIONS_PER_CLIENT" in reason
        first.close()
        wait_until(lambda: limited.streams() == 1, what=limited.why())
        third = WsClient(limited.port, "/stream")
        limited.publish(data="in")
        assert second.event() == third.event() == {"data": "in"}
    finally:
        limited.process.stop()


def test_the_library_never_imports_gevent_websocket_for_a_plain_app() -> None:
    script = (
        "import sys, flask, flask_sse_stream\n"
        "app = flask.Flask('plain'); sse = flask_sse_stream.SSE(app)\n"
        "sse.send_new_event(data='x', id=True)\n"
        "with app.test_client() as client:\n"
        "    response = client.get('/stream', buffered=False); next(response.response); response.close()\n"
        "    assert client.get('/stream/health/live').status_code == 200\n"
        "print('geventwebsocket' in sys.modules)\n"
    )
    out = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_an_sse_stream_under_the_websocket_handler_writes_to_its_socket_directly(
    server: Server, client_for: Callable[..., StreamClient], channel: str
) -> None:
    sse = client_for(server.port, f"/stream?channel={channel}")
    sse.next_chunk()
    server.publish(data="first", channel=channel)
    assert sse.next_event().data == "first"
    # No gunicorn.socket under gevent-websocket's handler: the socket is found through wsgi.input.
    assert server.request("GET", f"/info?channel={channel}")["direct"] == server.direct, server.why()


def test_a_websocket_writes_to_its_socket_directly_and_answers_pings_between_direct_writes(
    server: Server, connect: Callable[..., WsClient], channel: str
) -> None:
    client = connect(f"channel={channel}")
    server.publish(data="first", channel=channel)
    assert client.event() == {"data": "first"}
    assert server.request("GET", f"/info?channel={channel}")["direct"] == server.direct, server.why()
    for n in range(20):
        client.ws.ping(b"p%d" % n)
        server.publish(data=f"e{n}", channel=channel)
    pongs, events = [], []
    while len(events) < 20 or len(pongs) < 20:
        opcode, frame = client.ws.recv_data_frame(True)
        if opcode == ABNF.OPCODE_PONG:
            pongs.append(frame.data)
        elif opcode == ABNF.OPCODE_TEXT:
            events.append(json.loads(frame.data)["data"])
    assert events == [f"e{n}" for n in range(20)]
    assert pongs == [b"p%d" % n for n in range(20)]


def test_a_client_gone_without_a_close_frame_ends_its_stream(
    server: Server, connect: Callable[..., WsClient], channel: str
) -> None:
    client = connect(f"channel={channel}")
    wait_until(lambda: server.request("GET", f"/info?channel={channel}")["of_channel"] == 1, what=server.why())
    client.ws.sock.close()  # no close frame: the server's watcher of the socket sees the EOF
    wait_until(lambda: server.request("GET", f"/info?channel={channel}")["of_channel"] == 0, what=server.why())
