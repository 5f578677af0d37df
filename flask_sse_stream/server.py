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

import gevent
import gevent.event
from gevent.monkey import get_original
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from .config import cors_origins as check_cors_origins
from .event import show
from .extension import SSE
from .view import stream_response
from .waking import thread_ident

log = logging.getLogger("flask_sse_stream.server")

_Socket = get_original("socket", "socket")
#: Seconds ``stop()`` lets a stream blocked on a client finish its write.
STOP_TIMEOUT = 0.5


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
    cors_origins: str | Iterable[str] | None = "*",
) -> StopServer:
    """Serve the stream of ``a_sse`` at ``/`` of ``hostname:port_no``, in the background.

    :param port_no: the TCP port (``0``: any free port, see ``stop.port``).
    :param a_sse: an :class:`SSE` on one app, such as :func:`make_sse` returns.
    :param max_allow_wait: the listen backlog.
    :param reuse: set ``SO_REUSEADDR``, so that after ``stop()`` the port can
        be listened on again at once.
    :param hostname: the interface to listen on; ``None``: all of them (IPv4 and IPv6).
    :param cors_origins: ``"*"``, a list of allowed origins, or ``None``.
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
    if hostname is not None and not isinstance(hostname, str):
        raise TypeError(f"hostname must be a str or None (all interfaces), got {show(hostname)}")
    origins = check_cors_origins(
        "cors_origins", list(cors_origins) if isinstance(cors_origins, (set, frozenset)) else cors_origins
    )
    app = a_sse._app()
    state = a_sse.state_for(app)
    listener = _listen(hostname, port_no, max_allow_wait, bool(reuse))
    port = listener.getsockname()[1]
    tag = object()

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") not in ("", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"the stream is at /\n"]
        address = environ.get("REMOTE_ADDR", "")
        if address.startswith("::ffff:"):  # an IPv4 client of the dual-stack listener
            environ["REMOTE_ADDR"] = address[len("::ffff:") :]
        with app.request_context(environ):
            response = stream_response(state, origins, server=tag)
        return response(environ, start_response)

    started = threading.Event()
    control: dict[str, Any] = {}

    def serve() -> None:
        try:
            server = WSGIServer(listener, wsgi, spawn=Pool(), log=None, error_log=log)
            stopping = gevent.event.Event()
            control.update(loop=gevent.get_hub().loop, thread=thread_ident(), stopping=stopping)
            server.start()
        except BaseException as error:
            control["error"] = error
            listener.close()
            return
        finally:
            started.set()
        stopping.wait()
        state.hub.close((c for c in state.hub.connections() if c.server is tag), hangup=True)
        server.stop(timeout=STOP_TIMEOUT)

    thread = threading.Thread(target=serve, name=f"sse-server-{port}", daemon=True)
    thread.start()
    started.wait()
    if "error" in control:
        raise control["error"]

    def stop() -> None:
        atexit.unregister(stop)
        if not thread.is_alive():
            return
        if thread_ident() == control["thread"]:
            control["stopping"].set()
        else:
            control["loop"].run_callback_threadsafe(control["stopping"].set)
        thread.join(STOP_TIMEOUT + 1)

    # A server thread still running Python while the interpreter shuts down can crash it.
    atexit.register(stop)

    log.info("serving server-sent events on port %d", port)
    return StopServer(port, stop)


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
