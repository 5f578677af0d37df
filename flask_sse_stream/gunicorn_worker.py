"""What a gunicorn worker does to the streams it serves: end them on shutdown, warn about several workers.

gunicorn gives a worker ``graceful_timeout`` seconds after SIGTERM to finish
its requests, but a stream never finishes by itself. So, in a gunicorn
worker, SIGTERM, SIGINT and SIGQUIT first end every stream of the process
(cleanly: the browser reconnects, with ``Last-Event-ID``, to another worker),
cut the connections of those whose client does not take the end within
half a second, and then run gunicorn's own handler.

This is set up by itself at the first request a worker serves. A
``gunicorn.conf.py`` can set it up as the worker starts instead, and have
the several-workers warning at once, with gunicorn's own hook::

    from flask_sse_stream.gunicorn_worker import post_worker_init
"""

from __future__ import annotations

import logging
import os
import signal
import weakref
from typing import Any

from .backends.memory import MemoryBackend
from .core import SSECore, all_cores
from .fanout import end_gracefully

log = logging.getLogger("flask_sse_stream")

_hooked_pid: int | None = None
_ending_pid: int | None = None
_warned: weakref.WeakSet[SSECore] = weakref.WeakSet()


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook: streams end on shutdown; warn if several workers share no store."""
    _hook_shutdown_signals()
    workers = getattr(worker.cfg, "workers", 1)
    if workers > 1:
        warn_if_in_process(f"gunicorn runs {workers} workers")


def on_request(environ: dict[str, Any]) -> None:
    """Called as a request starts: adapt to the server it runs under, once per process."""
    # gevent-websocket's GeventWebSocketWorker gives no gunicorn.socket, but says whose server it is.
    gunicorn = "gunicorn.socket" in environ or "gunicorn/" in str(environ.get("SERVER_SOFTWARE", ""))
    if gunicorn and _hooked_pid != os.getpid():
        _hook_shutdown_signals()
    if environ.get("wsgi.multiprocess"):
        warn_if_in_process("this server runs several worker processes")


def shutting_down() -> bool:
    """True once this process has been told to stop (its new streams end at once)."""
    return _ending_pid == os.getpid()


def warn_if_in_process(why: str) -> None:
    for core in all_cores():
        if isinstance(core.backend, MemoryBackend) and core not in _warned:
            _warned.add(core)
            _warn(why)


def _warn(why: str) -> None:
    log.warning(
        "%s, but SSE_REDIS_URL is not set for flask_sse_stream: each worker has its own store and id"
        " counter, so a client sees only the events sent in the worker it is connected to, and ids"
        " repeat across workers. Set SSE_REDIS_URL (the Redis backend), or run one worker.",
        why,
    )


def _hook_shutdown_signals() -> None:
    global _hooked_pid
    if _hooked_pid == os.getpid():
        return
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, _ending_streams_first(signal.getsignal(signum)))
    except ValueError:
        return  # not the main thread: a threaded server; try again on the next request
    _hooked_pid = os.getpid()


def _ending_streams_first(previous: Any) -> Any:
    def handler(signum: int, frame: Any) -> None:
        global _ending_pid
        _ending_pid = os.getpid()
        end_gracefully([stream for core in all_cores() for stream in core.fanout.streams()])
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler
