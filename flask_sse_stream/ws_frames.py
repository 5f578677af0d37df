"""WebSocket frames (RFC 6455) as the stream's WebSocket transport writes and reads them.

The server's frames are never masked, so one event's frame is the same bytes
for every client: it is built once per event (from the event's SSE text, the
form every backend delivers) and shared, as the SSE frame is.

An event's frame is a text frame holding one JSON object with the keys
``id`` (a string, as ``EventSource.lastEventId``), ``event``, ``data`` (the
string ``EventSource`` would give as ``event.data``) and ``retry`` (an
integer), each only when the event has it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Sequence

from .event import Event
from .stream import PIECE

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
#: Bytes of payload a client frame may carry (its pings, its small text frames): more closes with 1009.
MAX_CLIENT_FRAME = 4096
#: Events whose frames are kept for the next recipients (the latest ones).
CACHED = 4096

_cache: dict[int, tuple[bytes, bytes]] = {}


class FrameError(Exception):
    """A client frame that ends the connection: the close code to send, and why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit a control frame (123 bytes)."""
    return frame(CLOSE, struct.pack("!H", code) + reason.encode()[:123])


PING_FRAME = frame(PING, b"")


def fields_of(sse: bytes) -> dict[str, object]:
    """The fields of one event in its SSE text (as :func:`~flask_sse_stream.event.new_event` writes it)."""
    fields: dict[str, object] = {}
    data: list[str] = []
    for line in sse.decode("utf-8").split("\n"):
        name, _, value = line.partition(": ")
        if name == "data":
            data.append(value)
        elif name == "id" or name == "event":
            fields[name] = value
        elif name == "retry":
            fields[name] = int(value)
    if data:
        fields["data"] = "\n".join(data)
    return fields


def event_frame(event: Event) -> bytes:
    """The text frame of ``event``, shared by every recipient of the same event."""
    sse = event.frame
    kept = _cache.get(id(sse))
    if kept is not None and kept[0] is sse:
        return kept[1]
    text = json.dumps(fields_of(sse), ensure_ascii=False, separators=(",", ":"))
    built = frame(TEXT, text.encode())
    if len(_cache) >= CACHED:
        _cache.pop(next(iter(_cache)), None)
    _cache[id(sse)] = (sse, built)
    return built


def json_frame(fields: dict[str, object]) -> bytes:
    return frame(TEXT, json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode())


def read_frame(read: Callable[[int], bytes]) -> tuple[int, bytes]:
    """The next client frame (opcode, unmasked payload); raises :class:`FrameError` or :class:`EOFError`."""
    first, second = struct.unpack("!BB", _exactly(read, 2))
    opcode, length = first & 0x0F, second & 0x7F
    if first & 0x70:
        raise FrameError(1002, "reserved bits set (no extension was agreed)")
    if not second & 0x80:
        raise FrameError(1002, "client frames must be masked")
    if opcode not in (TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION):
        raise FrameError(1002, f"unknown opcode {opcode}")
    if opcode >= CLOSE and (length > 125 or not first & 0x80):
        raise FrameError(1002, "control frames must be final and at most 125 bytes")
    if length == 126:
        (length,) = struct.unpack("!H", _exactly(read, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _exactly(read, 8))
    if length > MAX_CLIENT_FRAME:
        raise FrameError(1009, f"a client frame may carry at most {MAX_CLIENT_FRAME} bytes, got {length}")
    mask = _exactly(read, 4)
    payload = _exactly(read, length)
    if length:
        key = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    if opcode == CONTINUATION:
        raise FrameError(1002, "a continuation frame with no message begun")
    if not first & 0x80:
        raise FrameError(1003, "fragmented messages are not accepted here")
    return opcode, payload


def _exactly(read: Callable[[int], bytes], n: int) -> bytes:
    data = read(n) if n else b""
    if len(data) != n:
        raise EOFError("the client closed the connection")
    return data


def is_ping(text: str) -> bool:
    """Whether a client's text frame is its keep-alive, ``{"ping": ...}``."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and list(value) == ["ping"]


def pieces(events: Sequence[Event]) -> Iterator[bytes]:
    """The frames of ``events`` joined, about :data:`PIECE` bytes a write (a client that stops reading holds one)."""
    frames: list[bytes] = []
    size = 0
    for event in events:
        built = event_frame(event)
        frames.append(built)
        size += len(built)
        if size >= PIECE:
            yield b"".join(frames)
            frames, size = [], 0
    if frames:
        yield b"".join(frames)
