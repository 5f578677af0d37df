"""Reading a request body within a size limit and a deadline, and closing connections whose body is left unread.

A client that announces a body and sends it slowly, or not at all, would
otherwise hold a greenlet (or a thread) for as long as the server lets a read
wait. At the deadline the read side of the connection is shut, so the read
ends wherever it waits (in gevent or in a plain thread); the answer is then
``408`` and the connection closes after it.
"""

from __future__ import annotations

import socket
from typing import IO, Any

from flask import Response
from werkzeug.exceptions import HTTPException

from .concurrency import later
from .stream_request import socket_of


class TooLarge(ValueError):
    """The body is longer than the limit."""


class TooSlow(TimeoutError):
    """The body did not arrive within the deadline."""


def read_body(environ: dict[str, Any], stream: IO[bytes], length: int | None, limit: int, seconds: float) -> bytes:
    """The body of the request, read from ``stream`` (no further than ``limit`` bytes) within ``seconds``.

    Raises :class:`TooLarge` past ``limit`` bytes and :class:`TooSlow` past
    the deadline. Without a known socket (a test client) there is no deadline.
    """
    if length is not None and length > limit:
        raise TooLarge(length)
    deadline = _Deadline(socket_of(environ), seconds)
    parts = []
    size = 0
    try:
        # A chunked body has no Content-Length: read until its end or the limit.
        while chunk := stream.read(min(65536, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise TooLarge(size)
            parts.append(chunk)
    except (OSError, ValueError, HTTPException) as error:  # werkzeug raises ClientDisconnected, an HTTPException
        if deadline.passed:
            raise TooSlow(f"the body did not arrive within {seconds:g} s (SSE_PUBLISH_TIMEOUT)") from None
        raise error from None
    finally:
        deadline.cancel()
    if deadline.passed:
        raise TooSlow(f"the body did not arrive within {seconds:g} s (SSE_PUBLISH_TIMEOUT)")
    return b"".join(parts)


def has_unread_body(environ: dict[str, Any]) -> bool:
    """Whether the request announces a body (the caller has not read it)."""
    length = environ.get("CONTENT_LENGTH") or "0"
    return (length.isdigit() and int(length) > 0) or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def close_after(response: Response, environ: dict[str, Any], linger: float) -> Response:
    """``response``, after which the client's connection closes (when the server tells its socket).

    A lingering close: the write side ends after the answer, so the client
    sees the answer and the end; what it still sends is read and dropped by
    the server, for ``linger`` seconds at most. Closing outright while a
    client still sends its body would reset the connection, and the client
    could lose the answer.
    """
    sock = socket_of(environ)
    if sock is not None:
        response.call_on_close(lambda: _linger(sock, linger))
    return response


def _linger(sock: Any, seconds: float) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return  # the client is gone already
    _Deadline(sock, seconds, socket.SHUT_RDWR)


class _Deadline:
    """Shuts the read side (or ``how``) of ``sock`` after ``seconds`` unless cancelled first."""

    def __init__(self, sock: Any, seconds: float, how: int = socket.SHUT_RD) -> None:
        self.passed = False
        self._sock = sock
        self._how = how
        self._cancel = later(seconds, self._expire) if sock is not None else None

    def _expire(self) -> None:
        self.passed = True
        try:
            self._sock.shutdown(self._how)
        except OSError:
            pass  # the client is gone already

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()
