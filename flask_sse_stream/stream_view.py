"""The stream endpoint: request checks, CORS, subscribing and the replay, then live events.

The view runs in the request context only to check the request and to
subscribe; the body it returns needs no context, so a stream does not keep
the request context (and its memory) alive for its whole life.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Response, request

from .access import admit
from .config import CorsOrigins
from .core import SSECore
from .event import Event, reset_frame
from .gunicorn_worker import shutting_down
from .hangups import on_departure, watch
from .spread import farewell
from .stream import Stream
from .stream_body import OPENING, Hangup, StreamBody
from .stream_request import (
    BadRequest,
    check_one_channel,
    client_key,
    cors_headers,
    direct_socket,
    parse_channels,
    parse_query,
    resume_point,
    socket_of,
    tune,
)
from .ws_transport import ENDED, FOR_STATUS, RESTART, TRY_AGAIN, Refusal, Session, websocket_of
from .ws_transport import socket_of as ws_socket

#: Seconds a client refused for load should wait (``Retry-After``).
RETRY_AFTER = 5
_STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

#: The environ key, set by the standalone server, that holds its ``(cors_origins, server tag)``.
STANDALONE = "flask_sse_stream.standalone"

log = logging.getLogger("flask_sse_stream")


def stream_response(core: SSECore, cors_origins: CorsOrigins, server: object = None) -> Response:
    """Answer a request to the stream endpoint (any method), for ``cors_origins``."""
    standalone = request.environ.get(STANDALONE)
    if standalone is not None:  # the standalone server's port, through the app's pipeline
        cors_origins, server = standalone
    headers = cors_headers(cors_origins, request.headers.get("Origin"))
    ws = websocket_of(request.environ)
    # Over a WebSocket (accepted already), a refusal is a close frame with the code of its status.
    refuse = partial(_refuse_ws, ws) if ws is not None else refuse_http
    method = request.method
    if ws is None and request.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        message = (
            "this server does not accept WebSocket upgrades: serve the app with gevent-websocket's"
            " WebSocketHandler or GeventWebSocketWorker (pip install flask-sse-stream[websocket]), or use SSE"
        )
        return refuse(501, message, headers)
    if method == "OPTIONS":
        if "Access-Control-Allow-Origin" in headers:
            headers["Access-Control-Allow-Methods"] = "GET"
            headers["Access-Control-Allow-Headers"] = "Last-Event-ID, Cache-Control"
        return Response(status=204, headers=headers)
    if method not in ("GET", "HEAD"):
        message = f"{method} is not allowed here; the stream answers GET (and HEAD, OPTIONS)"
        return refuse(405, message, headers, {"Allow": "GET, HEAD, OPTIONS"})
    try:
        query = parse_query(request.environ.get("QUERY_STRING", ""))
        channels = parse_channels(query)
        if core.one_channel:
            check_one_channel(query)
    except BadRequest as error:
        _refused(core, "bad_request", "refused a stream from %s: %s", request.remote_addr, error)
        return refuse(400, str(error), headers)
    address = request.remote_addr
    client = client_key(address, core.settings.client_ipv6_prefix)
    # The cheap checks first: a client at a limit costs no authorizer call.
    over = _over_limit(core, client, headers, refuse)
    if over is not None:
        return over
    since = time.monotonic()
    admitted = admit(core.authorizers, channels)
    if admitted.refused is not None:
        channel = admitted.refused
        _refused(core, "authorization", "refused a stream of %r to %s: @sse.authorize", channel, address)
        return refuse(403, f"channel {channel!r} is not open to this request", headers)
    deadline = core.deadline(admitted.expires_at)
    if deadline is not None and deadline <= time.monotonic():
        _refused(core, "authorization", "refused a stream to %s: its admission has expired", address)
        return refuse(403, "the admission of this request has expired (Admission.expires_at)", headers)
    headers.update(_STREAM_HEADERS)
    if method == "HEAD":
        return Response(status=200, headers=headers)
    sock = socket_of(request.environ) if ws is None else ws_socket(ws)
    stream = Stream(channels, address, core.settings.queue_size, sock, server, core.counters,
                    admitted.subjects, deadline, since, core.settings.reconnect_spread)  # fmt: skip
    stream.client = client
    return _open(core, stream, sock, resume_point(request.environ, query), headers, ws, refuse)


def _open(
    core: SSECore,
    stream: Stream,
    sock: object,
    after: int | None,
    headers: dict[str, str],
    ws: Any,
    refuse: Callable[..., Response],
) -> Response:
    settings = core.settings
    environ = request.environ
    if sock is not None:
        tune(sock, settings.keepalive)
    hangup: Callable[..., Response] = partial(_hangup, sock, headers) if ws is None else partial(_close_ws, ws)
    if shutting_down():
        # This worker is ending: open the stream and end it at once, so the
        # browser reconnects (with Last-Event-ID) to a worker that stays.
        return hangup(farewell(settings.reconnect_spread))
    full = core.fanout.add(stream, settings.max_connections, settings.max_connections_per_client)
    if full == "client_limit" and _free_departed(core, stream.client):
        full = core.fanout.add(stream, settings.max_connections, settings.max_connections_per_client)
    if full is not None:
        return _over_limit(core, stream.client, headers, refuse, full) or refuse(503, full, headers)
    try:
        replay = core.open_stream(stream, after)
    except ConnectionError as error:
        # A browser gives up for good on any status but 200: open the stream
        # and end it, so it comes back (with Last-Event-ID) after its retry time.
        core.close_stream(stream)
        core.log.warning("unavailable", "ended a new stream at once: %s", error)
        return hangup(None, TRY_AGAIN)
    except BaseException:
        core.close_stream(stream)
        raise
    if stream.closed:
        # Ended before it opened (end_streams, a shutdown): nothing goes out,
        # and the client asks again, to be authorized again.
        core.close_stream(stream)
        return hangup(stream.farewell(), RESTART if stream.ending is None else ENDED)
    if ws is not None:
        return _session(core, stream, ws, replay.events, replay.reset)
    log.debug("opened a stream of %s for %s", ", ".join(stream.channels), request.remote_addr)
    first = [OPENING]
    if settings.retry is not None:
        first.append(b"retry: %d\n" % settings.retry)
    first.append(b"\n")
    if replay.reset:
        first.append(reset_frame(settings.reset_event))
    direct = direct_socket(environ, sock) if settings.direct_writes else None
    # A client that closes its connection (or resets its HTTP/2 stream) frees its stream at once, not at
    # the next write; on HTTP/2 its slot before the connection's next request is read.
    if sock is not None:
        unwatch: Callable[[], None] | None = watch(sock, stream.abort)
    else:
        unwatch = on_departure(environ, partial(_departed, core, stream))
    body = StreamBody(core.close_stream, stream, b"".join(first), settings.keepalive, direct, replay.events, unwatch)
    return Response(body, status=200, headers=headers, direct_passthrough=True)


def _over_limit(
    core: SSECore,
    address: str | None,
    headers: dict[str, str],
    refuse: Callable[..., Response],
    full: str | None = None,
) -> Response | None:
    """The answer to a stream of ``address`` while this process, or that client, is at its limit; None if neither."""
    settings = core.settings
    per_client = settings.max_connections_per_client
    if full is None:
        full = core.fanout.full_for(address, settings.max_connections, per_client)
        if full == "client_limit" and _free_departed(core, address):
            full = core.fanout.full_for(address, settings.max_connections, per_client)
    if full == "client_limit":
        _refused(core, "client_limit", "refused a stream from %s: it has %d open", address, per_client)
        message = f"this client already has {per_client} streams open here (SSE_MAX_CONNECTIONS_PER_CLIENT)"
        return refuse(429, message, headers, {"Retry-After": str(RETRY_AFTER)})
    if full == "limit":
        limit = settings.max_connections
        _refused(core, "limit", "refused a stream from %s: %d streams are open", address, limit)
        message = f"this process serves its limit of {limit} streams"
        return refuse(503, message, headers, {"Retry-After": str(RETRY_AFTER)})
    return None


def _free_departed(core: SSECore, client: str | None) -> int:
    """End the streams of ``client`` whose connections it has closed (a reload just now); how many.

    Their watchers would free them in a moment: a client at its limit that
    reconnects at once must not be refused meanwhile.
    """
    gone = [stream for stream in core.fanout.streams_of(client) if stream.departed()]
    for stream in gone:
        stream.abort()
        core.close_stream(stream)
    return len(gone)


def _departed(core: SSECore, stream: Stream) -> None:
    """The client of ``stream`` has gone: its slot is free now, and its writer ends (StreamBody.close)."""
    stream.close()
    core.close_stream(stream)


def _session(core: SSECore, stream: Stream, ws: Any, replay: list[Event], reset: bool) -> Response:
    """The body of a WebSocket stream that opened: the reset event (if any), the replay, then live events."""
    settings = core.settings
    first = [Event(None, None, None, None, reset_frame(settings.reset_event)), *replay] if reset else replay
    session = Session(core.close_stream, stream, ws, settings.keepalive, first, settings.direct_writes)
    return Response(session, status=200, direct_passthrough=True)


def _hangup(sock: object, headers: dict[str, str], farewell: bytes | None = None, code: int = 0) -> Response:
    """200, an opening (and a ``retry:``, for a planned end), the end: the browser reconnects (with
    Last-Event-ID) after its retry time."""
    return Response(Hangup(sock, farewell), status=200, headers=headers, direct_passthrough=True)


def _refused(core: SSECore, reason: str, message: str, *args: object) -> None:
    core.counters.refused[reason] += 1
    core.log.warning(reason, message, *args)


def _close_ws(ws: Any, farewell: bytes | None = None, code: int = RESTART) -> Response:
    """A WebSocket stream that ends as it opens: a close frame with ``code`` (and a ``retry``)."""
    return Response(Refusal(ws, code, "", farewell), status=200, direct_passthrough=True)


def _refuse_ws(ws: Any, status: int, message: str, *ignored: object) -> Response:
    return Response(Refusal(ws, FOR_STATUS[status], message), status=200, direct_passthrough=True)


def refuse_http(status: int, message: str, headers: dict[str, str], extra: dict[str, str] | None = None) -> Response:
    response = Response(message + "\n", status=status, headers=headers, content_type="text/plain; charset=utf-8")
    if extra:
        response.headers.update(extra)
    return response
