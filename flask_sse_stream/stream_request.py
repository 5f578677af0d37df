"""What the request of a stream asks for: channels, resume point, origin; and the client's socket."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import request

from .concurrency import in_gevent
from .config import CorsOrigins
from .event import DEFAULT_CHANNEL, check_channel

#: At most this many channels on one stream (browsers allow six HTTP/1.1
#: connections per origin, so pages combine channels instead).
MAX_CHANNELS = 16
_RESUME_ID = re.compile(r"[0-9]{1,20}")


class BadRequest(ValueError):
    pass


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


def cors_headers(allowed: CorsOrigins, origin: str | None) -> dict[str, str]:
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


def client_key(address: str | None, ipv6_prefix: int) -> str | None:
    """Whom ``SSE_MAX_CONNECTIONS_PER_CLIENT`` counts ``address`` as: an IPv6 address's prefix
    (``2001:db8:1:2::/64``: one host may take a whole /64), an IPv4 address itself."""
    if address is None or ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


def socket_of(environ: dict[str, Any]) -> Any:
    """The client's socket, where the server tells it, so a stuck stream can be cut.

    None on an HTTP/2 connection: there the socket carries the other streams
    of the connection too, so it is neither written to nor shut down for one
    of them (a stuck stream's writer is killed instead, and the server resets
    that stream alone).
    """
    if multiplexed(environ):
        return None
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is None:
        # gevent.pywsgi: wsgi.input reads from sock.makefile("rb").
        stream = getattr(environ.get("wsgi.input"), "rfile", environ.get("wsgi.input"))
        sock = getattr(getattr(stream, "raw", None), "_sock", None)
    return sock if hasattr(sock, "shutdown") else None


def multiplexed(environ: dict[str, Any]) -> bool:
    """True for a request on a connection shared with other streams: HTTP/2 (gunicorn's h2 markers) or later."""
    protocol = environ.get("SERVER_PROTOCOL") or ""
    return protocol.startswith(("HTTP/2", "HTTP/3")) or "gunicorn.http2.send_trailers" in environ


def direct_socket(environ: dict[str, Any], sock: Any) -> Any:
    """``sock`` if events may be written to it directly, else None.

    That needs a gevent writer, a plain (not TLS) gevent socket under it, and
    a response in chunked encoding: gunicorn and gevent's WSGIServer send one
    to an HTTP/1.1 request when, as here, there is no Content-Length, and
    never to an HTTP/1.0 one. werkzeug's server chunks by its own protocol
    version, not the request's (without threads it answers in HTTP/1.0, with
    no chunks, whatever the request): never there.
    """
    if sock is None or environ.get("SERVER_PROTOCOL") != "HTTP/1.1" or not in_gevent():
        return None
    if "werkzeug.socket" in environ:
        return None
    if not type(sock).__module__.startswith("gevent.") or hasattr(sock, "do_handshake"):
        return None
    return sock if getattr(sock, "_sock", None) is not None else None


def tune(sock: Any, keepalive: float) -> None:
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
