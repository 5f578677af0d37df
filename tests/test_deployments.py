"""The same small app (``tests/apps/basic.py``) under each supported server, as a real process (SPEC 6).

- ``gevent``: gevent's ``WSGIServer``, ``gevent.monkey.patch_all()`` first
  (``tests/apps/gevent_server.py``);
- ``flask``: ``flask --app ... run``, werkzeug's threaded dev server, not
  monkey-patched: streams wait in plain OS threads;
- ``gunicorn``: ``gunicorn -k gevent -w 1``;
- ``gevent-ws`` and ``gunicorn-ws``: the same with gevent-websocket's handler
  (``WSGIServer(handler_class=WebSocketHandler)``, ``-k GeventWebSocketWorker``),
  which replaces gunicorn's and gevent's own: the SSE stream works there as it
  does without it (issue 22).

One server per kind serves the module's tests (each test uses channels of
its own); the SIGTERM test starts its own.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import StreamClient
from tests.support.servers import PYTHON, ProcessServer, free_port

KINDS = ["gevent", "flask", "gunicorn", "gevent-ws", "gunicorn-ws"]
WEBSOCKET_WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
GRACEFUL_TIMEOUT = 10
_channels = itertools.count()


def command(kind: str, port: int) -> list[str]:
    if kind in ("gevent", "gevent-ws"):
        return [PYTHON, "-m", "tests.apps.gevent_server", str(port), *(["websocket"] if kind == "gevent-ws" else [])]
    if kind == "flask":
        return [
            PYTHON, "-m", "flask", "--app", "tests.apps.basic:create_app",
            "run", "--host", "127.0.0.1", "--port", str(port), "--with-threads", "--no-reload", "--no-debugger",
        ]  # fmt: skip
    worker = WEBSOCKET_WORKER if kind == "gunicorn-ws" else "gevent"
    return [
        PYTHON, "-m", "gunicorn", "-k", worker, "-w", "1", "--worker-connections", "200",
        "--graceful-timeout", str(GRACEFUL_TIMEOUT), "--no-control-socket", "-b", f"127.0.0.1:{port}",
        "tests.apps.basic:create_app()",
    ]  # fmt: skip


class Deployment:
    """A running server process with the basic app, and what the tests do with it."""

    def __init__(self, kind: str, log: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.server = ProcessServer(command(kind, self.port), self.port, log=log)

    def why(self) -> str:
        """For assertion messages: the server's log."""
        return f"\n--- {self.kind} server log ---\n{self.server.output}"

    def request(self, method: str, path: str, **params: Any) -> Any:
        body = urllib.parse.urlencode(params).encode() if method == "POST" else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def publish(self, **fields: Any) -> int | None:
        answer: int | None = self.request("POST", "/publish", **fields)["id"]
        return answer

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module", params=KINDS)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    kind: str = request.param
    running = Deployment(kind, tmp_path_factory.mktemp(kind) / "server.log")
    yield running
    running.stop()


@pytest.fixture
def channel() -> str:
    """A channel of this test's own, so the tests sharing a server do not see each other."""
    return f"test-{next(_channels)}"


@pytest.fixture
def stream(
    deployment: Deployment, client_for: Callable[..., StreamClient], channel: str
) -> Callable[..., StreamClient]:
    """``stream(headers=None)``: a client of ``/stream?channel=<this test's channel>``, past its opening write."""

    def open_stream(headers: dict[str, str] | None = None, query: str = "") -> StreamClient:
        client = client_for(deployment.port, f"/stream?channel={channel}{query}", headers)
        assert client.status == 200, deployment.why()
        client.next_chunk()  # the opening comment (and any replay)
        return client

    return open_stream


def test_the_process_runs_under_the_intended_server(deployment: Deployment) -> None:
    info = deployment.request("GET", "/info")
    expected = {"gevent": ("gevent/", True), "flask": ("Werkzeug/", False), "gunicorn": ("gunicorn/", True)}
    # gunicorn's pywsgi worker (which GeventWebSocketWorker is) says "gevent/<version> gunicorn/<version>".
    expected.update({"gevent-ws": expected["gevent"], "gunicorn-ws": ("gevent/", True)})
    prefix, patched = expected[deployment.kind]
    assert info["server"].startswith(prefix), deployment.why()
    assert ("gunicorn/" in info["server"]) is deployment.kind.startswith("gunicorn"), deployment.why()
    # Installed here (the test extra), gevent-websocket is imported only by a server that uses it.
    assert info["geventwebsocket"] is deployment.kind.endswith("-ws"), deployment.why()
    # The dev server must really run unpatched: its streams wait in plain threads.
    assert info["patched"] is patched, deployment.why()


def test_two_clients_receive_a_live_event_once(
    deployment: Deployment, stream: Callable[..., StreamClient], channel: str
) -> None:
    first, second = stream(), stream()
    assert deployment.publish(data="live", channel=channel) is None
    deployment.publish(data="marker", channel=channel)
    for client in (first, second):
        received = client.events(2)
        assert [(e.data, e.id) for e in received] == [("live", None), ("marker", None)], deployment.why()


def test_an_id_event_is_replayed_to_a_late_client(
    deployment: Deployment, stream: Callable[..., StreamClient], client_for: Callable[..., StreamClient], channel: str
) -> None:
    assigned = deployment.publish(data="stored", event="note", id="1", channel=channel)
    assert isinstance(assigned, int), deployment.why()
    late = client_for(deployment.port, f"/stream?channel={channel}")
    opening = late.next_chunk()
    assert opening == b": flask_sse_stream\n\nid: %d\nevent: note\ndata: stored\n\n" % assigned, deployment.why()
    [replayed] = late.pending_events()
    assert (replayed.id, replayed.event, replayed.data) == (assigned, "note", "stored")


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_last_event_id_gets_exactly_the_missed_events(
    deployment: Deployment, stream: Callable[..., StreamClient], channel: str, how: str
) -> None:
    ids = [deployment.publish(data=f"n{i}", id="1", channel=channel) for i in range(3)]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids), deployment.why()
    if how == "header":
        resumed = stream(headers={"Last-Event-ID": str(ids[0])})
    else:
        resumed = stream(query=f"&lastEventId={ids[0]}")
    deployment.publish(data="live", channel=channel)
    received = resumed.events(3)
    assert [(e.id, e.data) for e in received] == [(ids[1], "n1"), (ids[2], "n2"), (None, "live")], deployment.why()


def test_pending_events_go_out_in_one_write(
    deployment: Deployment, stream: Callable[..., StreamClient], channel: str
) -> None:
    client = stream()
    deployment.request("POST", "/burst", n=5, channel=channel)
    expected = b"".join(b"data: burst %d\n\n" % i for i in range(5))
    if deployment.kind != "flask":
        # Under gevent the stream's greenlet cannot run until the request that
        # sends yields, so the five events are pending together: one write.
        assert client.next_chunk() == expected, deployment.why()
        return
    # Under the threaded dev server the stream's thread wakes on the first
    # send and runs as soon as it gets the GIL. The sender usually finishes
    # its five sends within one GIL switch interval (5 ms), so here too they
    # arrive in one write (300 bursts out of 300 when this was written), but
    # nothing guarantees it: a sender descheduled mid-burst lets the stream
    # write what is pending so far. What holds: every write carries whole
    # events, in order, and none is lost or doubled.
    chunks = []
    while b"".join(chunks) != expected:
        chunk = client.next_chunk()
        assert chunk is not None and chunk.endswith(b"\n\n"), (chunks, chunk, deployment.why())
        chunks.append(chunk)
        assert len(b"".join(chunks)) <= len(expected), (chunks, deployment.why())
    assert 1 <= len(chunks) <= 5


def test_stream_headers(deployment: Deployment, client_for: Callable[..., StreamClient]) -> None:
    client = client_for(deployment.port, "/stream")
    assert client.status == 200, deployment.why()
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in client.headers
    assert "content-length" not in client.headers
    assert client.next_chunk() == b": flask_sse_stream\n\n"
    if deployment.kind in ("gevent", "gevent-ws"):
        # The library never sets Connection, and gevent's WSGIServer adds none.
        assert "connection" not in client.headers, client.header_list
    # gunicorn's and werkzeug's HTTP layers add their own, which the app cannot
    # remove: gunicorn 27 sends "Connection: keep-alive", werkzeug 3.1
    # "Connection: close" (it closes every streamed response's connection).


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_ends_open_streams_within_a_second(
    kind: str, tmp_path: Path, client_for: Callable[..., StreamClient]
) -> None:
    running = Deployment(kind, tmp_path / "server.log")
    try:
        clients = [client_for(running.port, "/stream"), client_for(running.port, "/stream?channel=other")]
        for client in clients:
            client.next_chunk()
        assert running.publish(data="before", id="1") == 1, running.why()
        assert clients[0].next_event().data == "before"
        assert running.request("GET", "/info")["streams"] == 2, running.why()

        started = time.monotonic()
        running.server.signal(signal.SIGTERM)
        for client in clients:
            client.wait_closed(GRACEFUL_TIMEOUT + 3)
            # The connection itself closes too (EOF), not only the response.
            assert client.sock.recv(1) == b""
        ended = time.monotonic() - started
        running.server.process.wait(GRACEFUL_TIMEOUT + 5)
        exited = time.monotonic() - started
    finally:
        running.stop()

    # gevent's WSGIServer and the dev server die at once (default SIGTERM), and
    # the kernel closes their sockets. In a gunicorn worker the library ends
    # every stream when the signal comes (a clean end of the chunked body) and
    # closes its connection, so the worker need not wait for --graceful-timeout:
    # it exits at its next once-a-second check.
    assert ended < 1.0, f"streams ended {ended:.2f} s after SIGTERM{running.why()}"
    limit = 3.0 if kind.startswith("gunicorn") else 1.0
    assert exited < limit, f"the server exited {exited:.2f} s after SIGTERM{running.why()}"
