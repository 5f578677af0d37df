"""A raw-socket SSE client for the tests: HTTP/1.1 by hand, WHATWG event parsing.

It reads what a browser would: the status, the headers, the chunks as the
server wrote them (so a test can count writes), and the events per the WHATWG
HTML standard, section "Server-sent events" (9.2.6 "Interpreting an event
stream"). Nothing in it comes from the package under test.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

_LINE = re.compile(rb"\r\n|\r|\n")


@dataclass
class Message:
    """A dispatched event, as a browser's ``MessageEvent`` would carry it."""

    data: str
    event: str = "message"
    last_event_id: str = ""
    #: The raw field lines of the event, e.g. ["id: 1", "data: x"].
    lines: list[str] = field(default_factory=list)

    @property
    def id(self) -> int | None:
        """The integer ``id:`` of this event, if it had an ``id:`` line."""
        for line in self.lines:
            if line.startswith("id:"):
                return int(line[3:].strip())
        return None


class StreamClient:
    """One HTTP request whose response is read incrementally."""

    def __init__(
        self,
        port: int,
        path: str | bytes = "/stream",
        headers: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        method: str = "GET",
        timeout: float = 10.0,
        read_head: bool = True,
        recv_buffer: int | None = None,
        source: str | None = None,
        version: str = "HTTP/1.1",
    ) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:  # another loopback address, such as 127.0.0.2: another client
            self.sock.bind((source, 0))
        if recv_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.timeout = timeout
        raw_path = path if isinstance(path, bytes) else path.encode()
        head = [b"%s %s %s" % (method.encode(), raw_path, version.encode()), b"Host: %s:%d" % (host.encode(), port)]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode("latin-1"))
        self.sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        self._raw = b""
        self._body = b""  # de-chunked body not yet parsed into lines
        self.eof = False
        #: The chunked body ended with its terminating chunk (not with a cut connection).
        self.clean_end = False
        #: Sizes of the chunks received, in order: one per write of the server.
        self.chunks: list[bytes] = []
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_event_id = ""
        self._data: list[str] = []
        self._event = ""
        self._lines: list[str] = []
        self._pending: list[Message] = []
        self._remaining: int | None = None  # Content-Length body left to read
        self._until_close = False  # a body without length or chunks: read until the server closes
        self.method = method
        self.status = 0
        self.version = ""
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.header_list: list[tuple[str, str]] = []
        if read_head:
            try:
                self.read_head()
            except (OSError, EOFError):
                self.sock.close()
                raise

    # -- HTTP ---------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False at end of stream."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing more from the server in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("nothing more from the server in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._raw += data
        return True

    def read_head(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self._raw:
            if not self._fill(deadline):
                raise EOFError(f"connection closed before the response head: {self._raw!r}")
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.version, code, self.reason = (status_line.split(" ", 2) + [""])[:3]
        self.status = int(code)
        for line in lines:
            name, _, value = line.partition(":")
            self.header_list.append((name, value.strip()))
            self.headers[name.lower()] = value.strip()
        if "transfer-encoding" not in self.headers:
            if "content-length" in self.headers:
                self._remaining = int(self.headers["content-length"])
            elif self._close_delimited():
                self._until_close = True  # HTTP/1.0 framing: the body ends when the connection does
            else:
                self._remaining = 0

    def _close_delimited(self) -> bool:
        """A body with neither length nor chunks ends with the connection (HTTP/1.0, or Connection: close)."""
        if self.status < 200 or self.status in (204, 304) or self.method.upper() == "HEAD":
            return False
        return self.version == "HTTP/1.0" or self.headers.get("connection", "").lower() == "close"

    def _read_chunk(self, deadline: float) -> bytes | None:
        """The next chunk of the body (de-chunked), or None at its end."""
        if self._until_close:
            while not self._raw:
                if not self._fill(deadline):
                    return None
            data, self._raw = self._raw, b""
            self.chunks.append(data)
            return data
        if self._remaining is not None:  # a Content-Length body
            if self._remaining == 0:
                return None
            while not self._raw:
                if not self._fill(deadline):
                    return None
            data, self._raw = self._raw[: self._remaining], self._raw[self._remaining :]
            self._remaining -= len(data)
            return data
        while b"\r\n" not in self._raw:
            if not self._fill(deadline):
                return None
        size_line, rest = self._raw.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(rest) < size + 2:
            if not self._fill(deadline):
                return None
            rest = self._raw.split(b"\r\n", 1)[1]
        self._raw = rest[size + 2 :]
        if size == 0:
            self.eof = self.clean_end = True
            return None
        chunk = rest[:size]
        self.chunks.append(chunk)
        return chunk

    def body(self, timeout: float | None = None) -> bytes:
        """The whole body of a response that ends (an error answer, say)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        parts = []
        while (chunk := self._read_chunk(deadline)) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def next_chunk(self, timeout: float | None = None) -> bytes | None:
        """The next write of the server, parsed into events as well."""
        chunk = self._read_chunk(time.monotonic() + (timeout or self.timeout))
        if chunk is not None:
            self._parse(chunk)
        return chunk

    # -- events -------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        self._body += data
        while True:
            match = _LINE.search(self._body)
            if match is None:
                return
            if match.group() == b"\r" and match.end() == len(self._body):
                return  # a CR at the end may be the first half of a CRLF
            line = self._body[: match.start()].decode("utf-8", "replace")
            self._body = self._body[match.end() :]
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._lines.append(line)
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)

    def _dispatch(self) -> None:
        lines, self._lines = self._lines, []
        data, self._data = self._data, []
        event, self._event = self._event, ""
        if not data:
            return  # WHATWG: an event without data is not dispatched
        self._pending.append(Message("\n".join(data), event or "message", self.last_event_id, lines))

    def next_event(self, timeout: float | None = None) -> Message:
        """The next dispatched event; TimeoutError if none comes, EOFError at the end."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self._pending:
            chunk = self._read_chunk(deadline)
            if chunk is None:
                raise EOFError("the stream ended")
            self._parse(chunk)
        return self._pending.pop(0)

    def events(self, count: int, timeout: float | None = None) -> list[Message]:
        deadline = time.monotonic() + (timeout or self.timeout)
        return [self.next_event(max(deadline - time.monotonic(), 0.001)) for _ in range(count)]

    def pending_events(self) -> list[Message]:
        """Events already parsed and not yet returned."""
        pending, self._pending = self._pending, []
        return pending

    def wait_closed(self, timeout: float | None = None) -> None:
        """Read until the server ends the response or closes; TimeoutError if it does not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while (chunk := self._read_chunk(deadline)) is not None:
            self._parse(chunk)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
