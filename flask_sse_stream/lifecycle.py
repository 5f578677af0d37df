"""What the process around the streams does to them: worker shutdown, several workers.

gunicorn gives a worker ``graceful_timeout`` seconds after SIGTERM to finish
its requests, but a stream never finishes by itself. So, in a gunicorn
worker, SIGTERM, SIGINT and SIGQUIT first end every stream of the process
(cleanly: the browser reconnects, with ``Last-Event-ID``, to another worker)
and then run gunicorn's own handler.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
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
    if isinstance(state.backend, MemoryBackend):
        workers = gunicorn_workers()
        if workers is not None and workers > 1:
            _warn_in_process(state, f"gunicorn runs {workers} workers")


def gunicorn_workers() -> int | None:
    """How many workers the gunicorn around this process runs, if it is one."""
    arbiter = sys.modules.get("gunicorn.arbiter")
    if arbiter is None:
        return None
    # The arbiter object is in the master and, forked, in every worker.
    for candidate in gc.get_objects():
        if isinstance(candidate, arbiter.Arbiter):
            return int(candidate.num_workers or 0)
    return None


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
    if environ.get("wsgi.multiprocess") and isinstance(state.backend, MemoryBackend):
        _warn_in_process(state, "this server runs several worker processes")


def _warn_in_process(state: AppState, why: str) -> None:
    if state in _warned:
        return
    _warned.add(state)
    log.warning(
        "%s, but SSE_REDIS_URL is not set for flask_sse_stream: each worker has its own store and id"
        " counter, so a client sees only the events sent in the worker it is connected to, and ids"
        " repeat across workers. Set SSE_REDIS_URL (the Redis backend), or run one worker.",
        why,
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
