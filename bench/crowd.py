"""Many raw SSE clients in one epoll loop, for bench/many_channels.py and bench/capacity.py.

Like the shared harness's driver: non-blocking sockets, one ``recv`` per ready
socket, no HTTP or SSE parsing beyond a regex that picks out ``data:`` lines
of the form ``e<seq> <CLOCK_MONOTONIC ns at send>`` (a split line is kept in a
48-byte tail). Streams are opened with at most ``pending`` of them not yet
answered, so the server's accept queue never overflows and the time to open
them all is the server's, not SYN retries'. At most about 28,000 streams
(the ephemeral ports of one source address); a process holds at most 20,000
open files here anyway.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable

EVENT = re.compile(rb"data: ?e(\d+) (\d+) ")
TAIL = 48


class Crowd:
    def __init__(self, port: int) -> None:
        self.port = port
        self.poller = select.epoll()
        self.socks: list[socket.socket] = []
        self.by_fd: dict[int, int] = {}
        self.tails: list[bytes] = []
        self.answered: list[bool] = []
        self.closed = 0

    def open(self, paths: list[bytes], pending: int = 500, timeout: float = 300) -> float:
        """Open one stream per path; return the seconds until every one has its response headers."""
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        waiting = 0
        base = len(self.socks)
        for number, path in enumerate(paths, base):
            while waiting >= pending:
                waiting -= self._answers(deadline)
            # No source address: bind() would pick the port from every port in use on the
            # machine, slower and slower as they fill up; connect() picks one free for this
            # destination, and the target's port is new at each run.
            sock = socket.create_connection(("127.0.0.1", self.port), 10)
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
            sock.setblocking(False)
            self.socks.append(sock)
            self.tails.append(b"")
            self.answered.append(False)
            self.by_fd[sock.fileno()] = number
            self.poller.register(sock.fileno(), select.EPOLLIN)
            waiting += 1
        while waiting:
            waiting -= self._answers(deadline)
        return time.perf_counter() - started

    def _answers(self, deadline: float) -> int:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{self.answered.count(False)} streams not answered in time")
        answered = 0
        for fd, _ in self.poller.poll(1):
            number = self.by_fd[fd]
            data = self._recv(number)
            if not self.answered[number] and data:
                if b" 200 " not in data.split(b"\r\n", 1)[0]:
                    raise RuntimeError(f"stream {number} refused: {data[:200]!r}")
                self.answered[number] = True
                answered += 1
        return answered

    def _recv(self, number: int) -> bytes:
        try:
            data = self.socks[number].recv(262144)
        except BlockingIOError:
            return b""
        if not data:
            self.closed += 1
            self.poller.unregister(self.socks[number].fileno())
        return data

    def pump(self, on_event: Callable[[int, int, int], None], timeout: float) -> None:
        """Read what is ready for up to ``timeout`` s; call on_event(client, seq, sent_ns) per event, read at now."""
        for fd, _ in self.poller.poll(timeout):
            number = self.by_fd[fd]
            data = self._recv(number)
            if not data:
                continue
            now = time.monotonic_ns()
            buffer = self.tails[number] + data
            end = 0
            for match in EVENT.finditer(buffer):
                on_event(number, int(match[1]), now - int(match[2]))
                end = match.end()
            self.tails[number] = buffer[max(end, len(buffer) - TAIL) :]

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.poller.close()
