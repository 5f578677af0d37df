"""The stream endpoint of SPEC 2: request checks, CORS, replay, then live events.

The view runs in the request context only to check the request and to
subscribe; the body it returns needs no context, so a stream does not keep
the request context (and its memory) alive for its whole life.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Response, request

from .event import check_channel, reset_frame
from .hub import Connection, shutdown
from .lifecycle import on_stream, shutting_down
from .state import AppState
from .waking import in_gevent

#: At most this many channels on one stream (browsers allow six HTTP/1.1
#: connections per origin, so pages combine channels instead).
MAX_CHANNELS = 16
DEFAULT_CHANNEL = "sse"
#: Seconds a client refused for load should wait (``Retry-After``).
RETRY_AFTER = 5

OPENING = b": flask_sse_stream\n"
KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_CHUNK = b"%x\r\n%s\r\n" % (len(KEEPALIVE), KEEPALIVE)
_RESUME_ID = re.compile(r"[0-9]{1,20}")
_STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

log = logging.getLogger("flask_sse_stream")


class BadRequest(ValueError):
    pass


def stream_response(
    state: AppState,
    cors: str | tuple[str, ...] | None,
    server: object = None,
    one_channel: bool = False,
) -> Response:
    """Answer a request to the stream endpoint (any method).

    ``one_channel``: Flask-SSE's stream, which takes at most one ``channel``
    parameter, the one its ``before_request`` guards read.
    """
    environ = request.environ
    headers = cors_headers(cors, request.headers.get("Origin"))
    method = request.method
    if method == "OPTIONS":
        if "Access-Control-Allow-Origin" in headers:
            headers["Access-Control-Allow-Methods"] = "GET"
            headers["Access-Control-Allow-Headers"] = "Last-Event-ID, Cache-Control"
        return Response(status=204, headers=headers)
    if method not in ("GET", "HEAD"):
        return _refuse(
            405,
            f"{method} is not allowed here; the stream answers GET (and HEAD, OPTIONS)",
            headers,
            {"Allow": "GET, HEAD, OPTIONS"},
        )
    try:
        query = parse_query(environ.get("QUERY_STRING", ""))
        channels = parse_channels(query)
        if one_channel:
            check_one_channel(query)
    except BadRequest as error:
        return _refuse(400, str(error), headers)
    for channel in channels:
        for authorize in state.authorizers:
            if not authorize(channel):
                return _refuse(403, f"channel {channel!r} is not open to this request", headers)
    headers.update(_STREAM_HEADERS)
    if method == "HEAD":
        return Response(status=200, headers=headers)

    settings = state.settings
    sock = socket_of(environ)
    if sock is not None:
        _tune(sock, settings.keepalive)
    if shutting_down():
        # This worker is ending: open the stream and end it at once, so the
        # browser reconnects (with Last-Event-ID) to a worker that stays.
        return _hangup(sock, headers)
    counters = state.counters
    connection = Connection(channels, request.remote_addr, settings.queue_size, sock, server, counters)
    if not state.hub.subscribe(connection, settings.max_connections):
        counters.streams_refused += 1
        log.warning("refused a stream from %s: %d streams are open", request.remote_addr, settings.max_connections)
        return _refuse(
            503,
            f"this process serves its limit of {settings.max_connections} streams",
            headers,
            {"Retry-After": str(RETRY_AFTER)},
        )
    on_stream(state, environ)
    try:
        # Subscribed first, then the store is read: an event sent meanwhile is
        # in both, and the connection drops the queued copy (ids up to `upto`).
        replay = state.backend.replay(channels, resume_point(environ, query))
    except ConnectionError as error:
        # A browser gives up for good on any status but 200: open the stream
        # and end it, so it comes back (with Last-Event-ID) after its retry time.
        state.hub.unsubscribe(connection)
        log.warning("ended a new stream at once: %s", error)
        return _hangup(sock, headers)
    except BaseException:
        state.hub.unsubscribe(connection)
        raise
    counters.streams_opened += 1
    log.debug("opened a stream of %s for %s", ", ".join(channels), request.remote_addr)
    first = [OPENING]
    if settings.retry is not None:
        first.append(b"retry: %d\n" % settings.retry)
    first.append(b"\n")
    if replay.reset:
        counters.resets_sent += 1
        first.append(reset_frame(settings.reset_event))
    if replay.events:
        counters.replays_served += 1
        counters.events_replayed += len(replay.events)
        first.extend(event.frame for event in replay.events)
    connection.replayed(replay.upto)
    direct = direct_socket(environ, sock) if settings.direct_writes else None
    body = StreamBody(state, connection, b"".join(first), direct)
    return Response(body, status=200, headers=headers, direct_passthrough=True)


class StreamBody(Iterator[bytes]):
    """The WSGI body of one stream.

    The first item (opening comment and replay) goes through the server, which
    writes the headers with it. After that, under gevent with a server whose
    socket and framing are known (``direct``), the body writes the chunks
    itself and senders may write to the socket directly; otherwise each item
    is one write of every pending event joined.
    """

    __slots__ = ("_state", "_connection", "_first", "_keepalive", "_direct")

    def __init__(self, state: AppState, connection: Connection, first: bytes, direct: Any = None) -> None:
        self._state = state
        self._connection = connection
        self._first: bytes | None = first
        self._keepalive = state.settings.keepalive
        self._direct = direct

    def __next__(self) -> bytes:
        data = self._next()
        self._state.counters.bytes_written += len(data)
        return data

    def _next(self) -> bytes:
        first = self._first
        if first is not None:
            self._first = None
            return first
        if self._direct is not None:
            self._write_directly(self._direct)
            raise StopIteration
        while True:
            events = self._connection.take(self._keepalive)
            if events is None:
                raise StopIteration
            if not events:
                return KEEPALIVE
            if len(events) == 1:
                return events[0].frame
            return b"".join([event.frame for event in events])

    def _write_directly(self, sock: Any) -> None:
        # The server has written the headers and the first item: it waits for
        # the next one, so the socket is ours until this returns.
        connection = self._connection
        counters = self._state.counters
        connection.allow_direct_writes(sock._sock)
        while (chunk := connection.take_chunk(self._keepalive, KEEPALIVE_CHUNK)) is not None:
            try:
                sock.sendall(chunk)
            except OSError:
                connection.close()  # the client is gone
                return
            counters.bytes_written += len(chunk)
            connection.wrote()

    def close(self) -> None:
        connection = self._connection
        self._state.hub.unsubscribe(connection)
        connection.close()
        log.debug("closed a stream of %s for %s", ", ".join(connection.channels), connection.remote_addr)
        if connection.hangup:
            # The server has written the end of the response by now (WSGI
            # calls close() last): end the connection too.
            connection.shutdown_socket()


class _Hangup(Iterator[bytes]):
    """A stream that ends after its opening and closes its connection."""

    def __init__(self, sock: Any) -> None:
        self._first: bytes | None = OPENING + b"\n"
        self._socket = sock

    def __next__(self) -> bytes:
        first, self._first = self._first, None
        if first is None:
            raise StopIteration
        return first

    def close(self) -> None:
        if self._socket is not None:
            shutdown(self._socket)


def _hangup(sock: Any, headers: dict[str, str]) -> Response:
    """200, an opening, the end: the browser reconnects (with Last-Event-ID) after its retry time."""
    return Response(_Hangup(sock), status=200, headers=headers, direct_passthrough=True)


def parse_query(query_string: str) -> list[tuple[str, str]]:
    """Decode the query string strictly as UTF-8 (PEP 3333 hands it over as latin-1)."""
    pairs = []
    try:
        for part in query_string.encode("latin-1").split(b"&"):
            if part:
                key, _, value = part.replace(b"+", b" ").partition(b"=")
                pairs.append((unquote_to_bytes(key).decode(), unquote_to_bytes(value).decode()))
    except UnicodeError:
        raw = query_string.encode("latin-1", "replace")[:100]
        raise BadRequest(f"the query string must be UTF-8 (percent-encoded), got {raw!r}") from None
    return pairs


def parse_channels(query: list[tuple[str, str]]) -> tuple[str, ...]:
    """The channels a stream asks for, each once, in request order."""
    names = [value for key, value in query if key == "channel"]
    if not names:
        return (DEFAULT_CHANNEL,)
    channels = tuple(dict.fromkeys(names))
    if len(channels) > MAX_CHANNELS:
        raise BadRequest(f"a stream takes at most {MAX_CHANNELS} channel parameters, got {len(channels)}")
    for channel in channels:
        try:
            check_channel(channel)
        except ValueError as error:
            raise BadRequest(str(error)) from None
    return channels


def check_one_channel(query: list[tuple[str, str]]) -> None:
    """Refuse anything but the one ``channel`` parameter that ``request.args.get("channel")`` sees.

    A guard of Flask-SSE's blueprint checks that one value: the stream must
    not serve a channel it did not see, whatever the form of the query.
    """
    names = [value for key, value in query if key == "channel"]
    if len(names) > 1:
        raise BadRequest(f"this stream (Flask-SSE's blueprint) takes one channel parameter, got {len(names)}")
    if names != request.args.getlist("channel"):
        raise BadRequest(f"the channel parameter could not be read unambiguously, got {request.query_string[:100]!r}")


def resume_point(environ: dict[str, Any], query: list[tuple[str, str]]) -> int | None:
    """The ``Last-Event-ID`` header, else the ``lastEventId`` parameter, if 1 to 20 digits."""
    value = environ.get("HTTP_LAST_EVENT_ID")
    if value is None:
        value = next((v for k, v in query if k == "lastEventId"), None)
    if value is not None and _RESUME_ID.fullmatch(value):
        return int(value)
    return None


def cors_headers(allowed: str | tuple[str, ...] | None, origin: str | None) -> dict[str, str]:
    """CORS headers for ``origin``: only for an allowed one; credentials only for a listed one."""
    if allowed is None:
        return {}
    if allowed == "*":
        return {"Access-Control-Allow-Origin": "*"}
    headers = {"Vary": "Origin"}
    if origin is not None and origin in allowed:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def socket_of(environ: dict[str, Any]) -> Any:
    """The client's socket, where the server tells it, so a stuck stream can be cut."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is None:
        # gevent.pywsgi: wsgi.input reads from sock.makefile("rb").
        stream = getattr(environ.get("wsgi.input"), "rfile", environ.get("wsgi.input"))
        sock = getattr(getattr(stream, "raw", None), "_sock", None)
    return sock if hasattr(sock, "shutdown") else None


def direct_socket(environ: dict[str, Any], sock: Any) -> Any:
    """``sock`` if events may be written to it directly, else None.

    That needs a gevent writer, a plain (not TLS) gevent socket under it, and
    an HTTP/1.1 response, which gunicorn, gevent's WSGIServer and werkzeug all
    send in chunked encoding when, as here, there is no Content-Length.
    """
    if sock is None or environ.get("SERVER_PROTOCOL") != "HTTP/1.1" or not in_gevent():
        return None
    if not type(sock).__module__.startswith("gevent.") or hasattr(sock, "do_handshake"):
        return None
    return sock if getattr(sock, "_sock", None) is not None else None


def _tune(sock: Any, keepalive: float) -> None:
    """Socket options for a stream.

    TCP_NODELAY: events are small writes, and Nagle's algorithm would hold one
    back until the previous one is acknowledged (up to 40 ms with delayed
    ACKs). TCP_USER_TIMEOUT: a peer that vanished without a FIN (a laptop
    closed, a network gone) never acknowledges the next keep-alive; the kernel
    then gives up on the connection instead of retrying for many minutes, and
    the keep-alive after that fails, so a vanished client is freed within two
    keep-alive periods. It is 3/4 of a period so that the kernel has given up
    before that next keep-alive is written.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(keepalive * 750))
    except (OSError, AttributeError):
        pass  # not TCP (a Unix socket), or closed already


def _refuse(status: int, message: str, headers: dict[str, str], extra: dict[str, str] | None = None) -> Response:
    response = Response(message + "\n", status=status, headers=headers, content_type="text/plain; charset=utf-8")
    if extra:
        response.headers.update(extra)
    return response
