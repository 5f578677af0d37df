"""An HTTP/1.1 response and event-stream reader, fed bytes as they arrive.

Written for the checker from the WHATWG HTML standard, section "Server-sent
events" (9.2.6 "Interpreting an event stream"), and RFC 9112's chunked
transfer coding; nothing in it comes from the library under test. It also
says, when the body ends, whether it ended inside a chunk, a line or an event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(rb"\r\n|\r|\n")


@dataclass
class Event:
    id: int | None
    event: str
    data: str


@dataclass
class StreamReader:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    #: The body ended: the last chunk, or the whole Content-Length.
    finished: bool = False
    #: The start of the body of an answer other than 200.
    body: bytes = b""
    _head: bytes = b""
    _raw: bytes = b""  # body bytes not yet de-chunked
    _chunked: bool = True
    _left: int | None = None  # bytes left of the current chunk (or of a Content-Length body)
    _text: bytes = b""  # de-chunked bytes not yet split into lines
    _fields: list[str] = field(default_factory=list)
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: int | None = None

    @property
    def has_head(self) -> bool:
        return self.status != 0

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data``."""
        if not self.has_head:
            self._head += data
            if b"\r\n\r\n" not in self._head:
                return []
            head, data = self._head.split(b"\r\n\r\n", 1)
            self._parse_head(head)
        self._raw += data
        self._dechunk()
        if self.status != 200:
            self.body, self._text = (self.body + self._text)[:2000], b""
            return []  # an error page, not an event stream
        return self._lines()

    def _parse_head(self, head: bytes) -> None:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ", 2)[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            self._left = int(self.headers["content-length"])

    def _dechunk(self) -> None:
        if not self._chunked:
            if self._left is not None:
                body, self._raw = self._raw[: self._left], b""
                self._left -= len(body)
                self.finished = self._left == 0
            else:
                body, self._raw = self._raw, b""
            self._text += body
            return
        while not self.finished:
            if self._left is None:
                if b"\r\n" not in self._raw:
                    return
                size, self._raw = self._raw.split(b"\r\n", 1)
                self._left = int(size.split(b";")[0], 16)
                if self._left == 0:
                    self.finished = True
                    return
            if len(self._raw) < self._left + 2:
                return
            self._text += self._raw[: self._left]
            self._raw = self._raw[self._left + 2 :]
            self._left = None

    def _lines(self) -> list[Event]:
        events = []
        while (match := _LINE.search(self._text)) is not None:
            if match.group() == b"\r" and match.end() == len(self._text):
                break  # a CR at the end may be the first half of a CRLF
            line = self._text[: match.start()].decode("utf-8", "replace")
            self._text = self._text[match.end() :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        self._fields.append(line)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = int(value) if value.isascii() and value.isdigit() else None
        return None

    def _dispatch(self) -> Event | None:
        data, event, id = self._data, self._event, self._id
        self._fields, self._data, self._event, self._id = [], [], "", None
        if not data:
            return None  # WHATWG: an event with no data line is not dispatched
        return Event(id, event or "message", "\n".join(data))

    def partial(self) -> str:
        """What an unfinished chunk, line or event holds ("" when the body so far ends on an event boundary)."""
        parts: list[str] = []
        if self.status != 200:
            return ""
        if not self.finished and (self._raw or (self._chunked and self._left is not None)):
            parts.append(f"chunk: {self._raw[:60]!r}")
        if self._text:
            parts.append(f"line: {self._text[:60]!r}")
        if self._fields:
            parts.append(f"event: {self._fields[:3]!r}")
        return "; ".join(parts)
