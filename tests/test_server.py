"""``start_sse_tcp_port`` and the seed's names (SPEC 1 and 7), over real sockets.

The server runs in a thread of its own with its own gevent hub; this test
process is not monkey-patched, so every ``send_new_event`` made here crosses
threads, as a user's script does.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE, make_sse, send_new_event, start_sse_tcp_port
from tests.support.client import StreamClient
from tests.support.servers import free_port

Start = Callable[..., Any]

# /proc/net/tcp states (include/net/tcp_states.h).
ESTABLISHED, TIME_WAIT, LISTEN = "01", "06", "0A"


# -- helpers ------------------------------------------------------------------


def sockets_on_port(port: int) -> list[tuple[str, int, int]]:
    """``(state, send queue bytes, inode)`` of every TCP socket whose local port is ``port``.

    An inode of 0 is a socket no process holds any more (closed, still
    draining or in TIME_WAIT).
    """
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.append((fields[3], int(fields[4].split(":")[0], 16), int(fields[9])))
    return found


def held_sockets(port: int) -> list[tuple[str, int, int]]:
    """The sockets on ``port`` that a process still holds open."""
    return [entry for entry in sockets_on_port(port) if entry[2] != 0]


def ends_within(clients: list[StreamClient], stop: Callable[[], None]) -> list[float]:
    """Call ``stop()`` and return, per client, the seconds from the call to its end of stream."""
    ends: list[float] = [float("inf")] * len(clients)
    errors: list[BaseException] = []

    def read(index: int, client: StreamClient) -> None:
        try:
            client.wait_closed(5)
            ends[index] = time.monotonic()
        except BaseException as error:  # reported by the caller
            errors.append(error)

    readers = [threading.Thread(target=read, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    stop()
    for reader in readers:
        reader.join(6)
    assert not errors, errors
    return [end - started for end in ends]


def connect_refused(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            return True
    return False


@pytest.fixture
def start() -> Iterator[Start]:
    """``start(port_no, a_sse, **kw)``: ``start_sse_tcp_port``, stopped after the test."""
    stops: list[Any] = []

    def run(*args: Any, **kwargs: Any) -> Any:
        stop = start_sse_tcp_port(*args, **kwargs)
        stops.append(stop)
        return stop

    yield run
    for stop in stops:
        stop()


@pytest.fixture
def connect(client_for: Callable[..., StreamClient]) -> Callable[..., StreamClient]:
    """``connect(port, path="/", headers=None, **kw)``: a client of the standalone server."""

    def open_stream(port: int, path: str = "/", headers: dict[str, str] | None = None, **kw: Any) -> StreamClient:
        return client_for(port, path, headers, **kw)

    return open_stream


def time_wait_on(port: int, a_sse: SSE, reuse: bool, connect: Callable[..., StreamClient]) -> None:
    """Serve on ``port``, carry an event, stop, and leave the server side of the connection in TIME_WAIT."""
    stop = start_sse_tcp_port(port, a_sse, reuse=reuse)
    try:
        client = connect(port)
        send_new_event(a_sse, data="traffic")
        assert client.next_event().data == "traffic"
    finally:
        stop()
    # stop() closed the server's side first (FIN_WAIT2); the client's close
    # completes the exchange, which leaves the server's side in TIME_WAIT.
    client.wait_closed(2)
    client.close()
    wait_for_time_wait(port)


def wait_for_time_wait(port: int) -> None:
    """Wait until the server's side of a closed connection on ``port`` is in TIME_WAIT."""
    deadline = time.monotonic() + 2
    while TIME_WAIT not in [state for state, _, _ in sockets_on_port(port)]:
        assert time.monotonic() < deadline, f"no TIME_WAIT on port {port}: {sockets_on_port(port)}"
        time.sleep(0.01)
    assert not held_sockets(port), sockets_on_port(port)


# -- serving ------------------------------------------------------------------


def test_port_zero_picks_a_free_port_and_tells_it(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    stop = start(0, a_sse)
    assert isinstance(stop.port, int) and stop.port > 0
    client = connect(stop.port)
    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"


def test_fixed_port_serves_the_stream_at_root(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    port = free_port()
    stop = start(port, a_sse)
    assert stop.port == port
    client = connect(port)
    assert client.status == 200
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert "connection" not in client.headers  # gevent's WSGIServer adds none, the library sets none
    assert client.next_chunk() == b": flask_sse_stream\n\n"
    send_new_event(a_sse, data="here")
    assert client.next_event().data == "here"


@pytest.mark.parametrize("path", ["/stream", "/x", "/favicon.ico"])
def test_other_paths_are_not_found(start: Start, connect: Callable[..., StreamClient], path: str) -> None:
    stop = start(0, make_sse())
    client = connect(stop.port, path)
    assert client.status == 404
    client.body()


def test_channel_query_selects_the_channel_at_root(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    stop = start(0, a_sse)
    room = connect(stop.port, "/?channel=room")
    default = connect(stop.port)
    send_new_event(a_sse, data="to room", channel="room")
    send_new_event(a_sse, data="to sse")
    assert room.next_event().data == "to room"
    assert default.next_event().data == "to sse"
    assert [c.channels for c in a_sse.connections] == [("room",), ("sse",)]


def test_events_from_several_threads_arrive_once_in_id_order(
    start: Start, connect: Callable[..., StreamClient]
) -> None:
    a_sse = make_sse()
    stop = start(0, a_sse)
    client = connect(stop.port)

    def send(name: str) -> None:
        for i in range(50):
            send_new_event(a_sse, data=f"{name} {i}", id=True)

    senders = [threading.Thread(target=send, args=(f"t{n}",)) for n in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    events = client.events(200)
    assert [event.id for event in events] == list(range(1, 201))
    for name in ("t0", "t1", "t2", "t3"):
        assert [e.data for e in events if e.data.startswith(name)] == [f"{name} {i}" for i in range(50)]


# -- stop() -------------------------------------------------------------------


def test_stop_refuses_new_connections_and_ends_streams_within_a_second(
    start: Start, connect: Callable[..., StreamClient]
) -> None:
    a_sse = make_sse()
    stop = start(0, a_sse)
    port = stop.port
    clients = [connect(port), connect(port, "/?channel=other"), connect(port, host="::1")]
    for client in clients:
        client.next_chunk()
    assert len(a_sse.connections) == 3

    ends = ends_within(clients, stop)

    assert max(ends) < 1.0, ends
    assert connect_refused(port)
    assert connect_refused(port, "::1")
    assert not held_sockets(port), sockets_on_port(port)
    assert a_sse.connections == []
    stop()  # a second call does nothing


def test_stop_ends_a_stream_whose_client_stopped_reading(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    stop = start(0, a_sse)
    port = stop.port
    stuck = connect(port, recv_buffer=1024)
    stuck.next_chunk()
    sent = 0
    for _ in range(100):  # 10 MB: far more than both socket buffers hold
        send_new_event(a_sse, data="x" * 100_000)
        sent += 100_000
    deadline = time.monotonic() + 5
    while not [entry for entry in held_sockets(port) if entry[0] == ESTABLISHED and entry[1] > 0]:
        assert time.monotonic() < deadline, sockets_on_port(port)
        time.sleep(0.01)
    time.sleep(0.2)
    [(_, queued, _)] = [entry for entry in held_sockets(port) if entry[0] == ESTABLISHED]
    # What the kernel holds is a fraction of what was sent: the rest waits in
    # the server, whose writer is blocked on the full socket.
    assert 0 < queued < sent / 2

    started = time.monotonic()
    stop()
    # Once stop() has closed the socket, what is left is the kernel's buffers,
    # which drain at the pace of the client's window: a client that reads
    # again does so with an ordinary buffer (a 1 KB window takes ~0.3 s for the
    # ~1.6 MB the kernel buffered here, which is the client's pace, not the server's).
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    stuck.wait_closed(5)
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert not held_sockets(port), sockets_on_port(port)
    assert a_sse.connections == []


def test_stop_ends_only_the_streams_of_its_own_server(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    first, second = start(0, a_sse), start(0, a_sse)
    on_first, on_second = connect(first.port), connect(second.port)
    send_new_event(a_sse, data="both")
    assert on_first.next_event().data == on_second.next_event().data == "both"

    [ended] = ends_within([on_first], first)

    assert ended < 1.0
    assert len(a_sse.connections) == 1
    send_new_event(a_sse, data="still here")
    assert on_second.next_event().data == "still here"


# -- reuse --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old_reuse", "new_reuse", "binds"),
    [
        (True, True, True),
        (False, False, False),
        # Linux lets a socket with SO_REUSEADDR bind over a TIME_WAIT only if
        # the socket that left it had SO_REUSEADDR too: reuse=True on the new
        # server is not enough after a server started with reuse=False.
        (False, True, False),
        (True, False, False),
    ],
)
def test_reuse_decides_whether_the_port_binds_again_over_time_wait(
    connect: Callable[..., StreamClient], start: Start, old_reuse: bool, new_reuse: bool, binds: bool
) -> None:
    a_sse = make_sse()
    port = free_port()
    time_wait_on(port, a_sse, old_reuse, connect)
    if binds:
        stop = start(port, a_sse, reuse=new_reuse)
        assert connect(port).status == 200
        stop()
    else:
        with pytest.raises(OSError) as caught:
            start(port, a_sse, reuse=new_reuse)
        assert caught.value.errno == errno.EADDRINUSE
        assert connect_refused(port)  # the failed attempt left nothing listening


# -- hostname -----------------------------------------------------------------


def test_no_hostname_listens_on_ipv4_and_ipv6(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    stop = start(0, a_sse)
    v4, v6 = connect(stop.port, host="127.0.0.1"), connect(stop.port, host="::1")
    assert v4.status == v6.status == 200
    send_new_event(a_sse, data="to both families")
    assert v4.next_event().data == v6.next_event().data == "to both families"
    assert len(a_sse.connections) == 2


def test_ipv4_client_of_the_dual_stack_listener_has_an_ipv4_remote_addr(
    start: Start, connect: Callable[..., StreamClient]
) -> None:
    # The dual-stack socket sees an IPv4 client as the IPv4-mapped "::ffff:127.0.0.1";
    # users (and allow-lists) expect "127.0.0.1", as on an IPv4 listener.
    a_sse = make_sse()
    stop = start(0, a_sse)
    connect(stop.port, host="127.0.0.1").next_chunk()
    connect(stop.port, host="::1").next_chunk()
    assert sorted(c.remote_addr for c in a_sse.connections) == ["127.0.0.1", "::1"]


def test_ipv4_hostname_listens_on_ipv4_only(start: Start, connect: Callable[..., StreamClient]) -> None:
    stop = start(0, make_sse(), hostname="127.0.0.1")
    assert connect(stop.port, host="127.0.0.1").status == 200
    assert connect_refused(stop.port, "::1")
    assert [state for state, _, _ in held_sockets(stop.port) if state == LISTEN] == [LISTEN]


# -- CORS ---------------------------------------------------------------------


def test_default_cors_allows_any_origin_without_credentials(start: Start, connect: Callable[..., StreamClient]) -> None:
    stop = start(0, make_sse())
    client = connect(stop.port, headers={"Origin": "https://page.example"})
    assert client.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in client.headers


@pytest.mark.parametrize("where", ["make_sse", "app.config"])
def test_by_default_the_sses_own_origins_hold(start: Start, connect: Callable[..., StreamClient], where: str) -> None:
    if where == "make_sse":
        a_sse = make_sse(cors_origins=["http://localhost:8080"])
    else:
        app = Flask(__name__)
        app.config["SSE_CORS_ORIGINS"] = ["http://localhost:8080"]
        a_sse = SSE(app)
    stop = start(0, a_sse)
    allowed = connect(stop.port, headers={"Origin": "http://localhost:8080"})
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:8080"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    other = connect(stop.port, headers={"Origin": "https://evil.example"})
    assert other.status == 200
    assert not [name for name in other.headers if name.startswith("access-control-")]


def test_an_explicit_cors_origins_wins_over_the_sses(start: Start, connect: Callable[..., StreamClient]) -> None:
    stop = start(0, make_sse(cors_origins=["http://localhost:8080"]), cors_origins=None)
    client = connect(stop.port, headers={"Origin": "http://localhost:8080"})
    assert not [name for name in client.headers if name.startswith("access-control-")]


def test_cors_list_echoes_a_listed_origin_with_credentials(start: Start, connect: Callable[..., StreamClient]) -> None:
    stop = start(0, make_sse(), cors_origins=["https://page.example", "http://localhost:8080"])
    allowed = connect(stop.port, headers={"Origin": "http://localhost:8080"})
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:8080"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    other = connect(stop.port, headers={"Origin": "https://evil.example"})
    assert other.status == 200
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-credentials" not in other.headers


def test_cors_preflight_on_the_standalone_server(start: Start, connect: Callable[..., StreamClient]) -> None:
    stop = start(0, make_sse(), cors_origins=["http://localhost:8080"])
    preflight = connect(
        stop.port, method="OPTIONS", headers={"Origin": "http://localhost:8080", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:8080"
    assert preflight.headers["access-control-allow-methods"] == "GET"
    assert preflight.headers["access-control-allow-headers"] == "Last-Event-ID, Cache-Control"


def test_no_cors_origins_gives_no_cors_headers(start: Start, connect: Callable[..., StreamClient]) -> None:
    stop = start(0, make_sse(), cors_origins=None)
    client = connect(stop.port, headers={"Origin": "https://page.example"})
    assert client.status == 200
    assert not [name for name in client.headers if name.startswith("access-control-")]


# -- arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"port_no": -1}, "-1"),
        ({"port_no": 70000}, "70000"),
        ({"port_no": "80"}, "'80'"),
        ({"port_no": True}, "True"),
        ({"a_sse": "not an SSE"}, "'not an SSE'"),
        ({"a_sse": Flask("not_an_sse")}, "Flask"),
        ({"a_sse": None}, "None"),
        ({"max_allow_wait": -1}, "-1"),
        ({"max_allow_wait": "4"}, "'4'"),
        ({"hostname": 127}, "127"),
        ({"cors_origins": "https://page.example"}, "'https://page.example'"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs: dict[str, Any], shown: str) -> None:
    arguments: dict[str, Any] = {"port_no": free_port(), "a_sse": make_sse(), **kwargs}
    with pytest.raises((TypeError, ValueError)) as caught:
        start_sse_tcp_port(**arguments)
    assert shown in str(caught.value)
    assert next(iter(kwargs)) in str(caught.value)
    if isinstance(arguments["port_no"], int) and 0 < arguments["port_no"] <= 65535:
        assert connect_refused(arguments["port_no"])


def test_send_new_event_function_refuses_a_non_sse() -> None:
    with pytest.raises(TypeError, match="a_sse must be an SSE"):
        send_new_event("not an SSE", data="x")  # type: ignore[arg-type]


# -- the seed's struct --------------------------------------------------------


def test_connections_describe_the_open_streams(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    stop = start(0, a_sse, hostname="127.0.0.1")
    before = time.time()
    client = connect(stop.port, "/?channel=b&channel=a&channel=b")
    client.next_chunk()
    after = time.time()
    [connection] = a_sse.connections
    assert connection.channels == ("b", "a")
    assert connection.remote_addr == "127.0.0.1"
    assert before <= connection.started_at <= after


def test_messages_and_history_hold_the_id_events(start: Start) -> None:
    a_sse = make_sse()
    start(0, a_sse)
    assert a_sse.messages == {}
    assert send_new_event(a_sse, data="live only") is None
    assert send_new_event(a_sse, data="first", id=True) == 1
    assert send_new_event(a_sse, data={"x": 1}, event="update", id=True, retry=3000, channel="room") == 2
    assert send_new_event(a_sse, data="third", id=True) == 3

    assert list(a_sse.messages) == [1, 3]
    first = a_sse.messages[1]
    assert (first.id, first.event, first.data, first.retry) == (1, None, "first", None)
    [(key, room)] = a_sse.history("room").items()
    assert key == 2
    assert (room.id, room.event, room.data, room.retry) == (2, "update", {"x": 1}, 3000)
    assert a_sse.history("sse") == a_sse.messages
    assert a_sse.history("nobody") == {}


# -- the walkthrough (SPEC 7) -------------------------------------------------


def test_walkthrough_at_the_protocol_level(start: Start, connect: Callable[..., StreamClient]) -> None:
    a_sse = make_sse()
    port = free_port()
    stop = start(port, a_sse, reuse=True)
    page1, page2 = connect(port), connect(port)
    for page in (page1, page2):
        page.next_chunk()

    # A data-only event reaches every open page.
    assert send_new_event(a_sse, data="Hello World!") is None
    for page in (page1, page2):
        hello = page.next_event()
        assert (hello.data, hello.event, hello.lines) == ("Hello World!", "message", ["data: Hello World!"])

    # A page opened afterwards does not get it: its first event is the next one.
    page3 = connect(port)
    assert page3.next_chunk() == b": flask_sse_stream\n\n"
    assert send_new_event(a_sse, data="Hello World! (again)", id=True) == 1
    for page in (page1, page2, page3):
        again = page.next_event()
        assert (again.data, again.id, again.lines) == (
            "Hello World! (again)",
            1,
            ["id: 1", "data: Hello World! (again)"],
        )

    # A page opened after the id'd event gets it by replay, in its first write.
    page4 = connect(port)
    first = page4.next_chunk()
    assert first == b": flask_sse_stream\n\nid: 1\ndata: Hello World! (again)\n\n"
    assert page4.pending_events()[0].data == "Hello World! (again)"

    # Stop: every page sees the end of its stream within a second.
    pages = [page1, page2, page3, page4]
    assert max(ends_within(pages, stop)) < 1.0

    # Events sent while no server runs are stored all the same.
    assert send_new_event(a_sse, data="missed 2", id=True) == 2
    assert send_new_event(a_sse, data="live while down") is None
    assert send_new_event(a_sse, data="missed 3", id=True, channel="elsewhere") == 3
    assert send_new_event(a_sse, data="missed 4", id=True) == 4

    # Same a_sse, same port, at once, while the old connections are in TIME_WAIT.
    for page in pages:
        page.close()
    wait_for_time_wait(port)
    start(port, a_sse, reuse=True)
    resumed = connect(port, headers={"Last-Event-ID": "1"})
    missed = resumed.events(2)
    assert [(e.id, e.data) for e in missed] == [(2, "missed 2"), (4, "missed 4")]
    assert resumed.last_event_id == "4"
    # Exactly those: the next event it gets is the next one sent.
    send_new_event(a_sse, data="after the restart")
    assert resumed.next_event().data == "after the restart"

    # A new page gets the whole store of its channel, and then live events.
    fresh = connect(port)
    assert [e.data for e in fresh.events(3)] == ["Hello World! (again)", "missed 2", "missed 4"]
    send_new_event(a_sse, data="live again")
    assert fresh.next_event().data == "live again"
