"""How a stream waits for its next event, and how any sender wakes it.

A stream waits in one of two worlds: in a gevent greenlet (gevent's
``WSGIServer``, gunicorn's gevent worker, ``start_sse_tcp_port``, any
monkey-patched process), or in a plain OS thread (``flask run`` without
monkey-patching). Senders can be any greenlet or thread. A gevent hub belongs
to one OS thread, so a sender in another thread must hand the wake-up to that
hub's loop (``run_callback_threadsafe``) instead of touching its objects.
"""

from __future__ import annotations

from functools import partial

import gevent
import gevent.event
import greenlet
from gevent.monkey import get_original, is_module_patched

#: The OS thread id, even under monkey-patching (where ``threading.get_ident``
#: names the greenlet).
thread_ident = get_original("_thread", "get_ident")
#: A real lock: never switches greenlets, so it is safe from greenlets and
#: threads alike as long as nothing inside the critical section yields.
allocate_lock = get_original("_thread", "allocate_lock")
_ThreadEvent = get_original("threading", "Event")


class GeventWaker:
    """Wakes a greenlet that waits on its own thread's hub."""

    __slots__ = ("_event", "_loop", "_thread", "greenlet")

    def __init__(self) -> None:
        self._event = gevent.event.Event()
        self._loop = gevent.get_hub().loop
        self._thread = thread_ident()
        #: The waiting greenlet, so that :meth:`kill` can end a blocked write.
        self.greenlet = gevent.getcurrent()

    def wake(self) -> None:
        if self._event.is_set():
            return
        if thread_ident() == self._thread:
            self._event.set()
        else:
            self._loop.run_callback_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return bool(self._event.wait(timeout))

    def kill(self) -> None:
        """End the waiting greenlet, even while it is blocked writing to a socket."""
        if not isinstance(self.greenlet, gevent.Greenlet):
            return  # a thread's main greenlet: its socket must be closed instead
        if thread_ident() == self._thread:
            self.greenlet.kill(block=False)
        else:
            self._loop.run_callback_threadsafe(partial(self.greenlet.kill, block=False))


class ThreadWaker:
    """Wakes a plain OS thread (the dev server's request threads)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = _ThreadEvent()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return bool(self._event.wait(timeout))

    def kill(self) -> None:
        """A thread cannot be killed; closing its socket ends a blocked write."""


def in_gevent() -> bool:
    """True when the caller runs under a gevent hub (a greenlet, or a patched process)."""
    return greenlet.getcurrent().parent is not None or is_module_patched("threading")


def new_waker() -> GeventWaker | ThreadWaker:
    """A waker for the calling greenlet or thread."""
    return GeventWaker() if in_gevent() else ThreadWaker()
