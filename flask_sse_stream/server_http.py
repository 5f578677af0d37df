"""The standalone server's HTTP layer: gevent's ``WSGIServer``, bounded against slow and many connections.

- A request's line and headers must arrive within ``header_timeout``
  seconds of its first byte being awaited, or the connection is closed: a
  client that trickles its headers (slowloris) holds its connection for
  that long at most.
- At most ``limit`` connections at once (streams and requests still being
  read together), below the process's file-descriptor limit. At the limit
  a new connection takes the place of the oldest one still sending its
  headers; when every connection is a stream it is answered ``503`` and
  closed, so the legitimate clients that send their headers promptly are
  served while slow ones wait.
- Out of file descriptors (``EMFILE``), accepting pauses for a moment,
  makes room by closing the oldest connection still sending its headers,
  and logs one line per interval, with no traceback.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
from typing import Any

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

from .quiet_log import QuietLog

log = logging.getLogger("flask_sse_stream.server")

#: File descriptors left to the rest of the process (Redis, logs, files) below its limit.
FD_RESERVE = 64
#: Seconds accepting pauses when the process is out of file descriptors.
PAUSE = 0.05
#: Seconds a refused connection is read from, at most, before it is closed.
LINGER = 1.0
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 5\r\nContent-Length: 43\r\nConnection: close\r\n\r\n"
    b"this server serves its limit of connections"
)


def connection_limit(max_streams: int) -> int:
    """Connections the server holds at most: its streams and some more, below the file-descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_streams + max(16, max_streams // 10)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - max(FD_RESERVE, soft // 8)))


class _Handler(WSGIHandler):  # type: ignore[misc]
    """pywsgi's handler, with a deadline on each request's line and headers."""

    server: BoundedServer

    def handle_one_request(self) -> Any:
        deadline = self._deadline = gevent.Timeout(self.server.header_timeout)
        self._greenlet = gevent.getcurrent()
        self.server.reading[self] = None
        deadline.start()
        try:
            return super().handle_one_request()
        except gevent.Timeout as timeout:
            if timeout is not deadline:
                raise
            if self.server.reading.pop(self, self) is None:  # still waiting, not evicted: its own deadline
                self.server.counts["header_timeouts"] += 1
            return None  # the connection closes
        finally:
            deadline.cancel()
            self.server.reading.pop(self, None)

    def handle_one_response(self) -> Any:
        # The head is in: from here on the application decides how long it takes.
        self._deadline.cancel()
        self.server.reading.pop(self, None)
        return super().handle_one_response()


class BoundedServer(WSGIServer):  # type: ignore[misc]
    """gevent's WSGIServer with a header deadline, a connection limit and quiet ``EMFILE``."""

    handler_class = _Handler

    def __init__(self, *args: Any, limit: int, header_timeout: float, log_interval: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.limit = limit
        self.header_timeout = header_timeout
        #: The handlers still reading a request's head, oldest first.
        self.reading: dict[_Handler, None] = {}
        self.counts = {"header_timeouts": 0, "evicted": 0, "refused": 0, "out_of_fds": 0}
        self._quiet = QuietLog(log, log_interval)

    def handle(self, sock: Any, address: Any) -> None:
        # This greenlet is in the pool already.
        if len(self.pool) > self.limit and not self._evict_oldest():
            self.counts["refused"] += 1
            _refuse(sock)
            return
        super().handle(sock, address)

    def _evict_oldest(self) -> bool:
        """Close the connection that has waited longest for its headers; False if none is waiting."""
        for handler in self.reading:
            del self.reading[handler]
            self.counts["evicted"] += 1
            # Its deadline, come early: it closes its connection as a timed-out one does.
            deadline = handler._deadline
            deadline.cancel()
            handler._greenlet.kill(deadline, block=False)
            return True
        return False

    def do_read(self) -> Any:
        try:
            return super().do_read()
        except OSError as error:
            if error.errno not in _OUT_OF_FDS:
                raise
            self.counts["out_of_fds"] += 1
            self._quiet.warning(
                "out_of_fds", "could not accept a connection on port %d: %s", self.server_port, error.strerror
            )
            self._evict_oldest()
            self.stop_accepting()
            self._pause = self.loop.timer(PAUSE)
            self._pause.start(self._resume)
            return None

    def _resume(self) -> None:
        if self.started:
            self.start_accepting()


def _refuse(sock: Any) -> None:
    """Answer ``503`` and close, reading what the client sent first: closing a socket with
    unread data sends an RST, which can destroy the answer before the client reads it."""
    try:
        getattr(sock, "_sock", sock).send(_FULL, socket.MSG_DONTWAIT)
        sock.shutdown(socket.SHUT_WR)
        with gevent.Timeout(LINGER, False):
            while sock.recv(4096):
                pass
    except OSError:
        pass
    sock.close()
