"""Stream clients on raw sockets, in threads, each following a behaviour drawn from the seed.

A client keeps its channels for its whole life, like a page, and reconnects
as a browser does after a clean end or a network error (50-200 ms later,
drawn), resuming with the last id it received (``Last-Event-ID`` header or
``?lastEventId=`` query, drawn). Per connection it draws what it does after
a while: keep reading until the server ends it, close and resume, drop the
connection with an RST (SO_LINGER 0), stall (stop reading, with a small
receive buffer, until the server cuts it or a timeout), or close and pause.

Each connection asks for an admission (see ``checker.app_access``): the
client's subject (most clients have one), for some connections an expiry
0.4-3 s ahead, and an authorization delay of up to 300 ms for half of them.
A refusal (``403``: its subject was revoked, or its expiry passed) makes it
start again as a page that reloads would: with a new subject, resuming from
the last id it had through ``?lastEventId=`` (as a page that keeps it in
``sessionStorage`` does). A :class:`Probe` is one connection that the
nemesis opens and closes itself.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from urllib.parse import urlencode

from .history import Clock, Connection, Received
from .wire import Event, StreamReader

BEHAVIOURS = [("keep", 20), ("close", 25), ("rst", 15), ("stall", 15), ("pause", 25)]
STALL_BUFFER = 4096
#: Seconds without reading the socket that a connection records (a stall, or a thread starved under load).
GAP = 0.2
#: Shares of clients with a subject and of connections with an expiry or an authorization delay.
WITH_SUBJECT, WITH_EXPIRY, WITH_DELAY = 0.8, 0.25, 0.5


class Client(threading.Thread):
    #: How a connection that ``stopping`` ends is recorded.
    stopped_as = "end-of-run"
    #: The stream's transport (``ws_clients.WebSocketClient``: "websocket").
    transport = "sse"

    def __init__(self, name: str, channels: list[str], rng: random.Random, port: int, clock: Clock) -> None:
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
        self._refusals = 0
        self.subject: str | None = f"{name}-0" if rng.random() < WITH_SUBJECT else None
        #: (subject, channels) while a request is out and its answer has not come.
        self.pending: tuple[str | None, list[str]] | None = None
        self._last_read = 0.0
        self._sock: socket.socket | None = None

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
        if self._refusals and self.last_id is not None:
            via = "query"  # a reloaded page: no Last-Event-ID header, the id it kept in the query
        record = Connection(
            self.client, len(self.connections), self.channels, self.last_id, via, self.clock(), behaviour
        )
        record.transport = self.transport
        self.connections.append(record)
        with self._lock:
            self.markers = set()
        reconnect = self.rng.uniform(0.05, 0.2)
        read_for = self.rng.uniform(0.3, 2.5)
        self._admission(record)
        sock = self._sock = socket.socket()
        if behaviour == "stall":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALL_BUFFER)
        sock.settimeout(2.0)
        try:
            sock.connect(("127.0.0.1", self.port))
            self.pending = (record.subject, self.channels)
            sock.sendall(self._request(via, record))
            self._read(sock, record, behaviour, time.monotonic() + read_for)
        except OSError as error:
            record.ended = f"network: {type(error).__name__}" if record.opened else f"refused: {error}"
        finally:
            self.pending = None
            record.end = self.clock()
            if record.opened is not None and time.monotonic() - self._last_read >= GAP:
                record.gaps.append([self.clock.of(self._last_read), record.end])
            self._goodbye(sock, record)
            if record.ended == "client-rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        if record.status == 403:
            self._refusals += 1  # start again, as a reloaded page, with a new subject
            self.subject = f"{self.client}-{self._refusals}" if self.subject is not None else None
        if behaviour == "pause" and record.ended == "client-close":
            return reconnect + self.rng.uniform(0.5, 2.0)
        return reconnect

    def _admission(self, record: Connection) -> None:
        """What this connection asks the app's authorizer for (nothing new at the end of the run)."""
        expires, delay = self.rng.random() < WITH_EXPIRY, self.rng.random() < WITH_DELAY
        seconds, wait = self.rng.uniform(0.4, 3.0), round(self.rng.uniform(0.0, 0.3), 3)
        record.subject = self.subject
        if self.final.is_set():
            return
        if expires:
            record.expires = round(record.start + seconds, 4)
        if delay:
            record.delay = wait

    def _goodbye(self, sock: socket.socket, record: Connection) -> None:
        """What the client says before it closes its socket (nothing, over SSE)."""

    def _reader(self) -> StreamReader:
        return StreamReader()

    def _end_of(self, reader: StreamReader) -> str:
        """How a connection the server ended (or closed under it) is recorded."""
        return "server-end"

    def _query(self, record: Connection) -> list[tuple[str, str]]:
        """The stream's query: its channels and the admission it asks for."""
        query = [("channel", channel) for channel in self.channels]
        if record.subject is not None:
            query.append(("subject", record.subject))
        if record.expires is not None:
            query.append(("expires", repr(self.clock.t0 + record.expires)))
        if record.delay:
            query.append(("delay", str(record.delay)))
        return query

    def _request(self, via: str | None, record: Connection) -> bytes:
        query = self._query(record)
        headers = [f"Host: 127.0.0.1:{self.port}", "Accept: text/event-stream", "Cache-Control: no-cache"]
        if via == "query":
            query.append(("lastEventId", str(self.last_id)))
        elif via == "header":
            headers.append(f"Last-Event-ID: {self.last_id}")
        lines = [f"GET /stream?{urlencode(query)} HTTP/1.1", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _read(self, sock: socket.socket, record: Connection, behaviour: str, until: float) -> None:
        reader = self._reader()
        sock.settimeout(0.1)
        self._last_read = time.monotonic()
        if behaviour == "stall":
            self._stalled = (until, until + self.rng.uniform(1.0, 3.0))
        while True:
            if self.stopping.is_set():
                record.ended = self.stopped_as
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
        now = time.monotonic()
        if now - self._last_read >= GAP:
            record.gaps.append([self.clock.of(self._last_read), self.clock.of(now)])
        self._last_read = now
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
        record.ended = self._end_of(reader)
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
            self.pending = None
            record.status = reader.status
            worker = reader.headers.get("x-worker")
            record.pid = int(worker) if worker and worker.isdigit() else None
            started = reader.headers.get("x-auth-start")
            record.auth_start = self.clock.of(float(started)) if started else None
        now = self.clock()
        for event in events:
            record.events.append(Received(now, event.id, event.event, event.data))
            if event.id is not None:
                self.last_id = event.id
            if event.data.startswith("final-") and event.id is None:
                with self._lock:
                    self.markers.add(event.data.rsplit("-", 1)[-1])


class Probe(Client):
    """One connection the nemesis opens (``admission``: subject and delay) and ends by setting ``stopping``."""

    stopped_as = "client-close"

    def __init__(self, name: str, channels: list[str], port: int, clock: Clock, subject: str, delay: float) -> None:
        super().__init__(name, channels, random.Random(name), port, clock)
        self.subject, self._delay = subject, delay

    def run(self) -> None:
        try:
            self._connection("probe")
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error

    def _admission(self, record: Connection) -> None:
        record.subject, record.delay = self.subject, self._delay
