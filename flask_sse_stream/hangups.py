"""Noticing that a client has gone (its FIN or RST) while its stream writes nothing.

An SSE client sends nothing after its request, so its socket becomes
readable only when it closes the connection (EOF, or an error after an RST)
or, rarely, sends another request on it (pipelining). :func:`watch` waits
for that without a write: under gevent with an io watcher on the stream's
own hub (no greenlet per stream), elsewhere (``flask run`` without
monkey-patching) with one OS thread per process waiting in ``epoll`` on
every stream's socket. :func:`departed` tells, without blocking, whether a
socket's peer has gone. A server that shares one socket between streams
(HTTP/2) tells instead (:data:`ON_DEPARTURE`, :class:`Departures`).
"""

from __future__ import annotations

import logging
import os
import select
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import gevent
from gevent.monkey import get_original

from .concurrency import allocate_lock, on_a_hub

log = logging.getLogger("flask_sse_stream")

_poll = get_original("select", "poll")
_EPOLL = getattr(select, "EPOLLIN", None) is not None
_epoll: Any = get_original("select", "epoll") if _EPOLL else None
_start_new_thread = get_original("_thread", "start_new_thread")
_PEEK = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)

Unwatch = Callable[[], None]

#: The environ key of a server that knows when the client of a request without a socket of its own has
#: gone (an HTTP/2 stream reset, or its connection closed): ``environ[ON_DEPARTURE](gone) -> unwatch``,
#: which calls ``gone()`` then, from the greenlet that reads the connection (see gunicorn_http2).
ON_DEPARTURE = "flask_sse_stream.on_departure"


def _unwatched() -> None:
    pass


def departed(sock: Any) -> bool:
    """Whether the peer of ``sock`` has closed or reset the connection; never blocks.

    False while nothing is readable, and when the client sent data (another
    request): it is still there.
    """
    raw = getattr(sock, "_sock", sock)  # a gevent socket's own
    try:
        fd = raw.fileno()
        if fd < 0:
            return True
        poller = _poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return False
        # The TCP bytes themselves, under any TLS layer (whose recv takes no flags).
        peek = socket.socket.recv if isinstance(raw, socket.socket) else type(raw).recv
        return not peek(raw, 1, _PEEK)
    except (BlockingIOError, InterruptedError, ValueError, TypeError):
        return False  # cannot tell: a write will
    except OSError:
        return True  # reset, or closed under us


def watch(sock: Any, gone: Callable[[], None]) -> Unwatch:
    """Call ``gone()`` soon after the peer of ``sock`` closes or resets the connection; the call that stops it.

    Call the returned function before the socket is closed (it may be called
    more than once). ``gone`` runs in the hub of the caller's thread under
    gevent, and in the watching thread otherwise: it must not block.
    """
    raw = getattr(sock, "_sock", sock)
    try:
        fd = raw.fileno()
    except OSError:
        return _unwatched
    if fd < 0:
        return _unwatched
    if on_a_hub():
        return _watch_on_hub(sock, fd, gone)
    if not _EPOLL:
        return _unwatched  # a write finds it gone, at the next keep-alive
    return _thread_watcher().watch(raw, fd, gone)


def on_departure(environ: dict[str, Any], gone: Callable[[], None]) -> Unwatch | None:
    """Call ``gone()`` once the server says that the client of this request has gone; the call that stops it.

    None if the server does not tell (:data:`ON_DEPARTURE`).
    """
    watch_departure = environ.get(ON_DEPARTURE)
    return watch_departure(gone) if watch_departure is not None else None


class Departures:
    """The streams of one shared connection (HTTP/2) whose server tells when their clients have gone."""

    def __init__(self) -> None:
        self._gone: dict[int, Callable[[], None]] = {}

    def watch(self, key: int, gone: Callable[[], None]) -> Unwatch:
        """Call ``gone()`` at :meth:`depart` of ``key`` or at :meth:`depart_all`; the call that stops it."""
        self._gone[key] = gone
        return partial(self._unwatch, key, gone)

    def _unwatch(self, key: int, gone: Callable[[], None]) -> None:
        if self._gone.get(key) is gone:
            del self._gone[key]

    def depart(self, key: int) -> None:
        """The client of stream ``key`` has gone (it reset the stream)."""
        gone = self._gone.pop(key, None)
        if gone is not None:
            _tell(gone)

    def depart_all(self) -> None:
        """The connection has ended: every stream's client has gone."""
        every, self._gone = self._gone, {}
        for gone in every.values():
            _tell(gone)


def _tell(gone: Callable[[], None]) -> None:
    try:
        gone()
    except Exception:  # the connection's reader must go on
        log.exception("could not end the stream of a departed client")


def _watch_on_hub(sock: Any, fd: int, gone: Callable[[], None]) -> Unwatch:
    watcher = gevent.get_hub().loop.io(fd, 1)

    def readable() -> None:
        # Level-triggered: readable data that is not an end stops the watch too.
        watcher.stop()
        try:
            if departed(sock):
                gone()
        except Exception:  # the hub must not see it
            log.exception("could not end the stream of a departed client")

    def unwatch() -> None:
        watcher.stop()
        watcher.close()

    watcher.start(readable)
    return unwatch


class _ThreadWatcher:
    """One OS thread that waits in epoll on the sockets of every stream served by plain threads."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._epoll = _epoll()
        self._lock = allocate_lock()
        self._watched: dict[int, tuple[Any, Callable[[], None]]] = {}
        _start_new_thread(self._run, ())

    def watch(self, raw: Any, fd: int, gone: Callable[[], None]) -> Unwatch:
        entry = (raw, gone)
        with self._lock:
            self._forget(fd)
            self._watched[fd] = entry
            self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT)
        return partial(self._unwatch, fd, entry)

    def _unwatch(self, fd: int, entry: tuple[Any, Callable[[], None]]) -> None:
        with self._lock:
            if self._watched.get(fd) is entry:
                self._forget(fd)

    def _forget(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # closed already

    def _run(self) -> None:
        while True:
            try:
                ready = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in ready:
                try:
                    gone = self._check(fd)
                    if gone is not None:
                        gone()
                except Exception:  # the watcher must go on
                    log.exception("could not end the stream of a departed client")

    def _check(self, fd: int) -> Callable[[], None] | None:
        """``gone`` of the socket ``fd`` if its peer has left; a socket still there is watched again."""
        with self._lock:
            entry = self._watched.get(fd)
            if entry is None:
                return None
            raw, gone = entry
            if departed(raw):
                self._forget(fd)
                return gone
            if _readable(raw):
                self._forget(fd)  # it sent data: a pipelined request, not an end
                return None
            try:
                self._epoll.modify(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT)
            except OSError:
                self._forget(fd)
        return None


def _readable(raw: Any) -> bool:
    try:
        poller = _poll()
        poller.register(raw.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except OSError:
        return False


_watcher: _ThreadWatcher | None = None
_watcher_lock = allocate_lock()


def _thread_watcher() -> _ThreadWatcher:
    global _watcher
    with _watcher_lock:
        if _watcher is None or _watcher.pid != os.getpid():  # none yet, or one of the parent before a fork
            _watcher = _ThreadWatcher()
        return _watcher


def shutdown(sock: Any) -> None:
    """End a client's connection both ways, whoever is blocked on it; quiet if it is gone already."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
