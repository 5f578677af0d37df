"""Stream clients on raw sockets, in threads, each following a behaviour drawn from the seed.

A client keeps its channels for its whole life, like a page, and reconnects
as a browser does after a clean end or a network error (50-200 ms later,
drawn), resuming with the last id it received (``Last-Event-ID`` header or
``?lastEventId=`` query, drawn). Per connection it draws what it does after
a while: keep reading until the server ends it, close and resume, drop the
connection with an RST (SO_LINGER 0), stall (stop reading, with a small
receive buffer, until the server cuts it or a timeout), or close and pause.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from urllib.parse import urlencode

from .history import Connection, Received
from .wire import Event, StreamReader

BEHAVIOURS = [("keep", 20), ("close", 25), ("rst", 15), ("stall", 15), ("pause", 25)]
STALL_BUFFER = 4096


class Client(threading.Thread):
    def __init__(
        self, name: str, channels: list[str], rng: random.Random, port: int, clock: Callable[[], float]
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.client = name
        self.channels = channels
        self.rng = rng
        self.port = port
        self.clock = clock
        self.connections: list[Connection] = []
        self.last_id: int | None = None
        #: Set at the end of the run: read continuously, reconnect at once, no more stalls or drops.
        self.final = threading.Event()
        self.stopping = threading.Event()
        #: The monotonic times between which the current connection is not read.
        self._stalled = (0.0, 0.0)
        self._lock = threading.Lock()
        self.markers: set[str] = set()  # final markers received on the current connection
        self.error: BaseException | None = None

    def stall(self, seconds: float) -> None:
        """Stop reading the current connection for ``seconds`` (the nemesis's slow client)."""
        now = time.monotonic()
        self._stalled = (now, now + seconds)

    def connected_with_markers(self, channels: set[str]) -> bool:
        with self._lock:
            return channels <= self.markers

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                behaviour = "keep" if self.final.is_set() else self._draw()
                pause = self._connection(behaviour)
                self.stopping.wait(pause)
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error

    def _draw(self) -> str:
        names, weights = zip(*BEHAVIOURS, strict=True)
        return self.rng.choices(names, weights)[0]

    def _connection(self, behaviour: str) -> float:
        """One connection, recorded; the pause before the next."""
        via = self.rng.choice(["header", "query"]) if self.last_id is not None else None
        record = Connection(
            self.client, len(self.connections), self.channels, self.last_id, via, self.clock(), behaviour
        )
        self.connections.append(record)
        with self._lock:
            self.markers = set()
        reconnect = self.rng.uniform(0.05, 0.2)
        read_for = self.rng.uniform(0.3, 2.5)
        sock = socket.socket()
        if behaviour == "stall":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALL_BUFFER)
        sock.settimeout(2.0)
        try:
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(self._request(via))
            self._read(sock, record, behaviour, time.monotonic() + read_for)
        except OSError as error:
            record.ended = f"network: {type(error).__name__}" if record.opened else f"refused: {error}"
        finally:
            record.end = self.clock()
            if record.ended == "client-rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        if behaviour == "pause" and record.ended == "client-close":
            return reconnect + self.rng.uniform(0.5, 2.0)
        return reconnect

    def _request(self, via: str | None) -> bytes:
        query = [("channel", channel) for channel in self.channels]
        headers = [f"Host: 127.0.0.1:{self.port}", "Accept: text/event-stream", "Cache-Control: no-cache"]
        if via == "query":
            query.append(("lastEventId", str(self.last_id)))
        elif via == "header":
            headers.append(f"Last-Event-ID: {self.last_id}")
        lines = [f"GET /stream?{urlencode(query)} HTTP/1.1", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _read(self, sock: socket.socket, record: Connection, behaviour: str, until: float) -> None:
        reader = StreamReader()
        sock.settimeout(0.1)
        if behaviour == "stall":
            self._stalled = (until, until + self.rng.uniform(1.0, 3.0))
        while True:
            if self.stopping.is_set():
                record.ended = "end-of-run"
                return
            now = time.monotonic()
            acting = not self.final.is_set()
            if acting and now >= until and behaviour in ("close", "rst", "pause"):
                record.ended = "client-rst" if behaviour == "rst" else "client-close"
                return
            if acting and self._stalled[0] <= now < self._stalled[1]:
                time.sleep(0.05)  # not reading: the server's writes pile up in the socket buffers
                continue
            if acting and behaviour == "stall" and now >= self._stalled[1]:
                if not self._drain(sock, reader, record):
                    record.ended = "stalled"
                return
            if not self._receive(sock, reader, record):
                return

    def _receive(self, sock: socket.socket, reader: StreamReader, record: Connection) -> bool:
        """Read once; False when the connection has ended."""
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return True
        except OSError as error:
            record.ended = f"network: {type(error).__name__}"
            record.partial = reader.partial()
            return False
        if data:
            self._take(reader.feed(data), reader, record)
        if data and not reader.finished:
            return True
        record.ended = "server-end"
        record.partial = reader.partial()
        record.error = reader.body.decode("utf-8", "replace")
        return False

    def _drain(self, sock: socket.socket, reader: StreamReader, record: Connection) -> bool:
        """After a stall, read what is buffered: True if the server had ended the connection."""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if not self._receive(sock, reader, record):
                return True
        return False

    def _take(self, events: list[Event], reader: StreamReader, record: Connection) -> None:
        if reader.has_head and record.opened is None:
            record.opened = self.clock()
            record.status = reader.status
            worker = reader.headers.get("x-worker")
            record.pid = int(worker) if worker and worker.isdigit() else None
        now = self.clock()
        for event in events:
            record.events.append(Received(now, event.id, event.event, event.data))
            if event.id is not None:
                self.last_id = event.id
            if event.data.startswith("final-") and event.id is None:
                with self._lock:
                    self.markers.add(event.data.rsplit("-", 1)[-1])
