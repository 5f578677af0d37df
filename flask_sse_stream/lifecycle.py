"""What the process around the streams does to them: worker shutdown, several workers.

gunicorn gives a worker ``graceful_timeout`` seconds after SIGTERM to finish
its requests, but a stream never finishes by itself. So, in a gunicorn
worker, SIGTERM, SIGINT and SIGQUIT first end every stream of the process
(cleanly: the browser reconnects, with ``Last-Event-ID``, to another worker)
and then run gunicorn's own handler.
"""

from __future__ import annotations

import logging
import os
import signal
import weakref
from typing import TYPE_CHECKING, Any

from .backends.memory import MemoryBackend

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger("flask_sse_stream")

_states: weakref.WeakSet[AppState] = weakref.WeakSet()
_hooked_pid: int | None = None
_ending_pid: int | None = None
_warned: weakref.WeakSet[AppState] = weakref.WeakSet()


def register(state: AppState) -> None:
    _states.add(state)


def close_all_streams() -> None:
    """End every open stream of this process, cleanly and at once, and close their connections."""
    for state in list(_states):
        state.hub.close(state.hub.connections(), hangup=True)


def shutting_down() -> bool:
    """True once this process has been told to stop (its new streams end at once)."""
    return _ending_pid == os.getpid()


def on_stream(state: AppState, environ: dict[str, Any]) -> None:
    """Called as a stream opens: adapt to the server it runs under, once per process."""
    if "gunicorn.socket" in environ and _hooked_pid != os.getpid():
        _hook_shutdown_signals()
    if environ.get("wsgi.multiprocess") and isinstance(state.backend, MemoryBackend) and state not in _warned:
        _warned.add(state)
        log.warning(
            "flask_sse_stream: this server runs several worker processes, but SSE_REDIS_URL is not set:"
            " each worker has its own store and id counter, so clients see only the events sent in the"
            " worker they are connected to, and ids repeat across workers. Set SSE_REDIS_URL, or run one worker."
        )


def _hook_shutdown_signals() -> None:
    global _hooked_pid
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, _ending_streams_first(signal.getsignal(signum)))
    except ValueError:
        return  # not the main thread: a threaded server; try again on the next stream
    _hooked_pid = os.getpid()


def _ending_streams_first(previous: Any) -> Any:
    def handler(signum: int, frame: Any) -> None:
        global _ending_pid
        _ending_pid = os.getpid()
        close_all_streams()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler
