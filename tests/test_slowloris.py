"""The standalone server against slow and many connections (slowloris), and out of file descriptors.

The server runs in a process of its own whose file-descriptor limit is
lowered (``tests/apps/fd_limited_server.py``), so that a few hundred
connections reach it, as they would reach a real server at its limit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flask_sse_stream import make_sse, start_sse_tcp_port
from tests.support.client import StreamClient
from tests.support.servers import PYTHON, ROOT, free_port, stop_process_group
from tests.support.waiting import wait_until

#: A request head that never ends: what a slowloris client sends, and then nothing more.
SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


class LimitedServer:
    def __init__(self, nofile: int, header_timeout: float = 60.0) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [PYTHON, "-m", "tests.apps.fd_limited_server", str(self.port), str(nofile), str(header_timeout)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def counts(self) -> dict[str, int]:
        return json.loads(self.ask("counts"))  # type: ignore[no-any-return]

    def stop(self) -> str:
        """Stop it; its standard error."""
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        try:
            errors = self.process.stderr.read()
            self.process.wait(10)
        finally:
            stop_process_group(self.process)
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()
        return errors


@pytest.fixture
def limited() -> Iterator[Callable[..., LimitedServer]]:
    servers: list[LimitedServer] = []

    def start(nofile: int, **kw: Any) -> LimitedServer:
        servers.append(LimitedServer(nofile, **kw))
        return servers[-1]

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


def slowloris(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send the start of a request head and nothing more."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(SLOW_HEAD)
        held.append(sock)
    return held


def test_a_client_is_served_while_500_slowloris_connections_are_open(limited) -> None:
    server = limited(256)
    held = slowloris(server.port, 500)
    try:
        counts = server.counts()
        assert counts["limit"] <= 256 - 64  # below the process's file descriptors
        client = StreamClient(server.port, "/", timeout=5)
        assert client.status == 200
        assert client.next_chunk().startswith(b": flask_sse_stream")
        assert server.ask("send served") == "sent"
        assert client.next_event().data == "served"
        client.close()
        assert server.counts()["evicted"] >= 500 - counts["limit"]
    finally:
        for sock in held:
            sock.close()
    errors = server.stop()
    assert "Traceback" not in errors, errors[-3000:]


def test_at_the_limit_of_streams_a_new_connection_is_refused_503(limited) -> None:
    server = limited(96)
    limit = server.counts()["limit"]
    streams = [StreamClient(server.port, "/", timeout=5) for _ in range(limit)]
    try:
        assert [stream.status for stream in streams] == [200] * limit
        refused = StreamClient(server.port, "/", timeout=5)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.body() == b"this server serves its limit of connections"
        refused.close()
        assert server.counts()["refused"] == 1
        streams.pop().close()
        # Its slot is freed without a write (the keep-alive is a minute away).
        wait_until(lambda: server.counts()["connections"] < limit, timeout=1.0, what="the slot to be freed")
        again = StreamClient(server.port, "/", timeout=5)
        assert again.status == 200
        again.close()
    finally:
        for stream in streams:
            stream.close()
    assert "Traceback" not in server.stop()


def test_out_of_file_descriptors_logs_one_line_and_recovers(limited) -> None:
    server = limited(128)
    assert server.ask("hog").startswith("hogged")
    waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    for sock in waiting:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    deadline = time.monotonic() + 5
    while server.counts()["out_of_fds"] < 10:  # accept fails again and again, every pause
        assert time.monotonic() < deadline, server.counts()
    assert server.ask("free") == "freed"
    for sock in waiting:  # accepted now, and served
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.close()
    errors = server.stop()
    assert "Traceback" not in errors, errors[-3000:]
    lines = [line for line in errors.splitlines() if "could not accept a connection" in line]
    assert len(lines) == 1, errors[-3000:]


def test_headers_that_trickle_are_cut_at_the_header_timeout() -> None:
    stop = start_sse_tcp_port(0, make_sse(), header_timeout=0.5)
    try:
        sock = socket.create_connection(("127.0.0.1", stop.port), timeout=5)
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sock.settimeout(0.1)
        closed = False
        while not closed and time.monotonic() - started < 5:
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # a header line every 0.1 s: never idle, never done
                closed = sock.recv(1) == b""
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        took = time.monotonic() - started
        sock.close()
        assert closed and 0.4 < took < 2, took
        prompt = StreamClient(stop.port, "/", timeout=5)  # a client that sends its head at once is served
        assert prompt.status == 200
        prompt.close()
    finally:
        stop()
