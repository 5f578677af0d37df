"""Greenlets and OS threads: how one waits, how another wakes it, and how work reaches the right thread.

A stream waits in one of two worlds: in a gevent greenlet (gevent's
``WSGIServer``, gunicorn's gevent worker, ``start_sse_tcp_port``, any
monkey-patched process), or in a plain OS thread (``flask run`` without
monkey-patching). Senders can be any greenlet or thread. A gevent hub belongs
to one OS thread, and so do the gevent sockets and greenlets it runs: another
thread must hand work to that hub's loop (``run_callback_threadsafe``) and
never touch them itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import gevent
import gevent.event
import greenlet
from gevent._hub_local import get_hub_if_exists
from gevent.monkey import get_original, is_module_patched

T = TypeVar("T")

#: The OS thread id, even under monkey-patching (where ``threading.get_ident``
#: names the greenlet).
thread_ident = get_original("_thread", "get_ident")
#: A real lock: never switches greenlets, so it is safe from greenlets and
#: threads alike as long as nothing inside the critical section yields.
allocate_lock = get_original("_thread", "allocate_lock")
_start_new_thread = get_original("_thread", "start_new_thread")


def in_gevent() -> bool:
    """True when the caller runs under a gevent hub (a greenlet, or a patched process)."""
    return greenlet.getcurrent().parent is not None or is_module_patched("threading")


def on_a_hub() -> bool:
    """True when the caller's thread runs a gevent hub: a greenlet, or a thread that has one.

    Not so for a native OS thread of a monkey-patched process (a thread
    pool's, a C library's): it must wait on real locks, since creating a
    hub there would leave the hub and its file descriptors behind when the
    thread ends, and nothing would run that hub's timers.
    """
    return greenlet.getcurrent().parent is not None or get_hub_if_exists() is not None


class Home:
    """The OS thread, and its gevent loop if it has one, that owns some sockets or greenlets.

    :meth:`run` runs a call there: at once when already there, else handed
    to that loop (in a greenlet of its own) while the caller waits without
    touching it.
    """

    __slots__ = ("thread", "loop")

    def __init__(self) -> None:
        self.thread = thread_ident()
        self.loop = gevent.get_hub().loop if in_gevent() else None

    def here(self) -> bool:
        return self.loop is None or thread_ident() == self.thread

    def soon(self, function: Callable[..., Any], *args: Any) -> None:
        """Have ``function(*args)`` called in this thread's loop, without waiting for it."""
        if self.loop is None or thread_ident() == self.thread:
            function(*args)
        else:
            self.loop.run_callback_threadsafe(partial(function, *args))

    def run(self, function: Callable[[], T]) -> T:
        """``function()`` run in this thread (its loop's greenlet), the caller waiting for it."""
        if self.here():
            return function()
        done = allocate_lock()
        done.acquire()
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append((True, function()))
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                outcome.append((False, error))
            finally:
                done.release()

        self.loop.run_callback_threadsafe(lambda: gevent.spawn(call))  # type: ignore[union-attr]
        done.acquire()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


def off_the_hub(function: Callable[[], T]) -> T:
    """``function()``, which blocks on plain sockets, without blocking a gevent hub that runs the caller.

    In an unpatched process, a greenlet (of ``start_sse_tcp_port``'s server,
    say) hands it to its hub's thread pool; a plain thread just calls it.
    """
    if greenlet.getcurrent().parent is not None and not is_module_patched("socket"):
        # The result comes back in a box, not as the pool's result: gevent's
        # AsyncResult outlives the call for a moment, and with it a store
        # read's whole reply (megabytes) the caller has already dropped.
        box: list[T] = []
        gevent.get_hub().threadpool.apply(lambda: box.append(function()))
        return box.pop()
    return function()


class GeventWaker:
    """Wakes a greenlet that waits on its own thread's hub."""

    __slots__ = ("_event", "home", "greenlet")

    def __init__(self) -> None:
        self._event = gevent.event.Event()
        self.home = Home()
        #: The waiting greenlet, so that :meth:`kill` can end a blocked write.
        self.greenlet = gevent.getcurrent()

    def wake(self) -> None:
        if not self._event.is_set():
            self.home.soon(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return bool(self._event.wait(timeout))

    def kill(self) -> None:
        """End the waiting greenlet, even while it is blocked writing to a socket."""
        if isinstance(self.greenlet, gevent.Greenlet):  # not a thread's main greenlet
            self.home.soon(partial(self.greenlet.kill, block=False))


class RealEvent:
    """An event made of real locks: a wait blocks the OS thread, whatever is monkey-patched.

    ``threading.Event``, even the original class, is built on the module's
    locks, which monkey-patching replaces with gevent's.
    """

    __slots__ = ("_set", "_gate", "_guard")

    def __init__(self) -> None:
        self._set = False
        self._gate = allocate_lock()  # held while the event is not set
        self._gate.acquire()
        self._guard = allocate_lock()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._guard:
            if not self._set:
                self._set = True
                self._gate.release()

    def clear(self) -> None:
        with self._guard:
            if self._set:
                self._set = False
                self._gate.acquire()

    def wait(self, timeout: float) -> bool:
        if self._gate.acquire(True, max(timeout, 0.0)):
            self._gate.release()
            return True
        return False


class ThreadWaker:
    """Wakes a plain OS thread: the dev server's request threads, a native thread of a patched process."""

    __slots__ = ("_event",)

    home = None

    def __init__(self) -> None:
        self._event = RealEvent()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def kill(self) -> None:
        """A thread cannot be killed; closing its socket ends a blocked write."""


def new_waker() -> GeventWaker | ThreadWaker:
    """A waker for the calling greenlet or thread."""
    return GeventWaker() if on_a_hub() else ThreadWaker()


def later(seconds: float, function: Callable[..., object], *args: Any) -> Callable[[], None]:
    """Call ``function(*args)`` in ``seconds``, in the background; the call that cancels it.

    On a hub, a greenlet of that hub; elsewhere, an OS thread of its own.
    """
    if on_a_hub():
        timer = gevent.spawn_later(seconds, function, *args)
        return partial(timer.kill, block=False)
    cancelled = RealEvent()

    def wait_then_call() -> None:
        if not cancelled.wait(seconds):
            function(*args)

    _start_new_thread(wait_then_call, ())
    return cancelled.set


def start_background(target: Callable[[], object], name: str) -> Callable[[], bool]:
    """Run ``target`` in the background; a call that tells, without switching, whether it still runs.

    A greenlet in a monkey-patched process, an OS thread otherwise. Not a
    patched ``threading.Thread`` asked ``is_alive()``: that takes a lock which
    may switch greenlets, and a ``gevent.Timeout`` or a kill delivered to the
    caller in that switch marks the running thread stopped (CPython
    bpo-45274), so that the caller would start a second one.
    """
    if is_module_patched("threading"):
        task = gevent.spawn(target)
        task.name = name
        return lambda: not task.dead
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread.is_alive


def wait_serving(stopping: gevent.event.Event) -> None:
    """Wait for ``stopping`` in the thread whose hub runs a server, with a timer alive all the while.

    Seen here: the loop of such a thread, after its greenlets had used the
    hub's thread pool (Redis calls without monkey-patching), counted no
    watcher and exited (``LoopExit``) while the server's listening watcher
    was still active, and the server stopped accepting. A timer that is
    always pending keeps the loop turning; it costs one wake-up a minute.
    """
    while not stopping.wait(60):
        pass
