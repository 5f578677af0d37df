"""``start_sse_tcp_port``: a stream served on its own port, in the background.

The server runs on gevent's ``WSGIServer`` in a thread of its own. In a
monkey-patched process that thread is a greenlet of the main hub; without
monkey-patching it is an OS thread with its own hub, so the caller's thread
may block (on ``input()``, say) while the server keeps serving.
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import gevent.event
from gevent.monkey import get_original
from gevent.pool import Pool

from .concurrency import Home, wait_serving
from .config import CorsOrigins
from .config import cors_origins as check_cors_origins
from .core import SSECore, core_of
from .event import show
from .extension import SSE
from .fanout import end_gracefully
from .server_app import standalone_app
from .server_http import BoundedServer, connection_limit
from .stream import GRACE

log = logging.getLogger("flask_sse_stream.server")

_Socket = get_original("socket", "socket")
#: Seconds a request's line and headers may take to arrive on the standalone server (``header_timeout``).
HEADER_TIMEOUT = 10.0


class _OwnOrigins:
    """The default of ``cors_origins``: the SSE's own ``SSE_CORS_ORIGINS``, or ``"*"`` if it has none."""

    def __repr__(self) -> str:
        return "<the SSE's SSE_CORS_ORIGINS, else '*'>"


OWN_ORIGINS: Any = _OwnOrigins()


class StopServer:
    """What :func:`start_sse_tcp_port` returns: call it to stop the server.

    ``port`` is the port it listens on (useful with ``port_no=0``).
    """

    def __init__(self, port: int, stop: Callable[[], None]) -> None:
        self.port = port
        self._stop = stop

    def __call__(self) -> None:
        self._stop()

    def __repr__(self) -> str:
        return f"<stop the SSE server on port {self.port}>"


def start_sse_tcp_port(
    port_no: int,
    a_sse: SSE,
    max_allow_wait: int = 4,
    reuse: bool = False,
    hostname: str | None = None,
    cors_origins: str | Iterable[str] | None = OWN_ORIGINS,
    header_timeout: float = HEADER_TIMEOUT,
) -> StopServer:
    """Serve the stream of ``a_sse`` at ``/`` of ``hostname:port_no``, in the background.

    :param port_no: the TCP port (``0``: any free port, see ``stop.port``).
    :param a_sse: an :class:`SSE` on one app, such as :func:`make_sse` returns.
    :param max_allow_wait: the listen backlog.
    :param reuse: set ``SO_REUSEADDR``, so that after ``stop()`` the port can
        be listened on again at once.
    :param hostname: the interface to listen on; ``None``: all of them (IPv4 and IPv6).
    :param cors_origins: ``"*"``, a list of allowed origins, or ``None`` (no
        CORS headers). By default the SSE's own :data:`SSE_CORS_ORIGINS`
        (``make_sse(cors_origins=[...])``), and ``"*"`` when it is ``None``,
        as in the Racket library, whose page and stream are on two ports.
    :param header_timeout: seconds a request's line and headers may take to
        arrive before its connection is closed (against slowloris clients).
    :return: ``stop()``, which closes the listener and every open stream of
        this server within one second.
    """
    if isinstance(port_no, bool) or not isinstance(port_no, int) or not 0 <= port_no <= 65535:
        raise ValueError(f"port_no must be an int from 0 to 65535, got {show(port_no)}")
    if not isinstance(a_sse, SSE):
        raise TypeError(f"a_sse must be an SSE (see make_sse()), got {type(a_sse).__name__} {show(a_sse)}")
    if isinstance(max_allow_wait, bool) or not isinstance(max_allow_wait, int) or max_allow_wait < 0:
        raise ValueError(
            f"max_allow_wait (the listen backlog) must be an int of at least 0, got {show(max_allow_wait)}"
        )
    if isinstance(header_timeout, bool) or not isinstance(header_timeout, (int, float)) or not 0 < header_timeout < 1e6:
        raise ValueError(f"header_timeout must be a positive number of seconds, got {show(header_timeout)}")
    if hostname is not None and not isinstance(hostname, str):
        raise TypeError(f"hostname must be a str or None (all interfaces), got {show(hostname)}")
    app = a_sse._app()
    core = core_of(app)
    origins = _origins(cors_origins, core.settings.cors_origins)
    listener = _listen(hostname, port_no, max_allow_wait, bool(reuse))
    server = _ServerThread(listener, standalone_app(app, core, origins, tag=listener), core, listener, header_timeout)
    server.start()
    # A server thread still running Python while the interpreter shuts down can crash it.
    atexit.register(server.stop)
    log.info("serving server-sent events on port %d", server.port)
    return StopServer(server.port, server.stop)


def _origins(cors_origins: str | Iterable[str] | None, own: CorsOrigins) -> CorsOrigins:
    if cors_origins is OWN_ORIGINS:
        return "*" if own is None else own
    if isinstance(cors_origins, (set, frozenset)):
        cors_origins = list(cors_origins)
    return check_cors_origins("cors_origins", cors_origins)


class _ServerThread:
    """gevent's WSGIServer in a thread of its own; :meth:`stop` may be called from any thread."""

    def __init__(
        self, listener: socket.socket, wsgi: Callable[..., Any], core: SSECore, tag: object, header_timeout: float
    ) -> None:
        self._header_timeout = header_timeout
        self.port: int = listener.getsockname()[1]
        self._listener = listener
        self._wsgi = wsgi
        self._core = core
        self._tag = tag
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._home: Home | None = None
        self._stopping: gevent.event.Event | None = None
        self._thread = threading.Thread(target=self._serve, name=f"sse-server-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def _serve(self) -> None:
        try:
            settings = self._core.settings
            server = BoundedServer(
                self._listener, self._wsgi, spawn=Pool(), log=None, error_log=log,
                limit=connection_limit(settings.max_connections), header_timeout=self._header_timeout,
                log_interval=settings.log_interval,
            )  # fmt: skip
            self._home, self._stopping = Home(), gevent.event.Event()
            server.start()
        except BaseException as error:
            self._error = error
            self._listener.close()
            return
        finally:
            self._started.set()
        wait_serving(self._stopping)
        end_gracefully([stream for stream in self._core.fanout.streams() if stream.server is self._tag])
        # Streams that do not end by themselves within the grace are cut by then.
        server.stop(timeout=GRACE + 0.25)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if not self._thread.is_alive() or self._home is None or self._stopping is None:
            return
        self._home.soon(self._stopping.set)
        self._thread.join(GRACE + 1.5)


def _listen(hostname: str | None, port: int, backlog: int, reuse: bool) -> socket.socket:
    if hostname is None:
        try:
            sock = _Socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address: tuple[Any, ...] = ("::", port)
        except OSError:
            sock, address = _Socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port)
    else:
        family, kind, proto, _, address = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)[0]
        sock = _Socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1 if reuse else 0)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock  # type: ignore[no-any-return]
