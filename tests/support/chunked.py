"""Reading a response body as the bytes arrived: HTTP/1.1 chunked framing, strictly."""

from __future__ import annotations

import socket
import time


def read_to_the_end(sock: socket.socket, already: bytes = b"", timeout: float = 20.0) -> bytes:
    """Every byte the server sends until it closes (or resets) the connection."""
    data = already
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the connection is still open after {timeout} s ({len(data)} bytes read)")
        sock.settimeout(left)
        try:
            part = sock.recv(1 << 20)
        except ConnectionResetError:
            return data
        if not part:
            return data
        data += part


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """The body carried by chunked ``raw``, and whether it ended with the terminating chunk.

    A connection cut inside a chunk gives the part of it that arrived, as a
    browser's parser would have seen it. Framing that is not chunked encoding
    raises :class:`ValueError`.
    """
    body = []
    position = 0
    while True:
        end_of_size = raw.find(b"\r\n", position)
        if end_of_size < 0:
            return b"".join(body), False
        size = int(raw[position:end_of_size].split(b";")[0], 16)
        start = end_of_size + 2
        if size == 0:
            if raw[start:] != b"\r\n":
                raise ValueError(f"bytes after the terminating chunk: {raw[start : start + 50]!r}")
            return b"".join(body), True
        body.append(raw[start : start + size])
        if len(raw) < start + size + 2:
            return b"".join(body), False
        if raw[start + size : start + size + 2] != b"\r\n":
            raise ValueError(f"a chunk of {size} bytes is not followed by CRLF at {start + size}")
        position = start + size + 2
