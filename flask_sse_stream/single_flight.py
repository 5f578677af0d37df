"""Calls that arrive together share one result: one read of the store for a crowd of streams."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import gevent

from .concurrency import GeventWaker, ThreadWaker, allocate_lock, new_waker, on_a_hub

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Seconds a caller waits for a result another caller is reading.
WAIT = 15.0


class _Flight(Generic[T]):
    __slots__ = ("done", "result", "error", "waiters")

    def __init__(self) -> None:
        self.done = False
        self.result: T | None = None
        self.error: Exception | None = None
        self.waiters: list[GeventWaker | ThreadWaker] = []


class SingleFlight(Generic[K, T]):
    """``run(key, read)``: callers with the same ``key`` that arrive while a read is open share its ``read()``.

    The first caller opens the flight, lets the greenlets that are ready join
    it, closes it and only then reads: every caller joined before the read
    began, so the result is at least as recent as the moment each one called.
    A leader that dies without a result (killed) leaves its followers to read
    for themselves. Safe from greenlets and threads.
    """

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._open: dict[K, _Flight[T]] = {}

    def run(self, key: K, read: Callable[[], T]) -> T:
        with self._lock:
            flight = self._open.get(key)
            if flight is None:
                flight = self._open[key] = _Flight()
                waker = None
            else:
                waker = new_waker()
                flight.waiters.append(waker)
        if waker is not None:
            return self._follow(flight, waker, read)
        closed = False
        try:
            if on_a_hub():
                gevent.sleep(0)  # the streams that are ready to run now join this flight
            self._close(key)
            closed = True
            flight.result = read()
            return flight.result
        except Exception as error:
            flight.error = error
            raise
        finally:
            if not closed:
                self._close(key)  # killed while others joined: they read for themselves
            flight.done = True
            for waiter in flight.waiters:
                waiter.wake()

    def _close(self, key: K) -> None:
        with self._lock:
            del self._open[key]

    @staticmethod
    def _follow(flight: _Flight[T], waker: GeventWaker | ThreadWaker, read: Callable[[], T]) -> T:
        if not waker.wait(WAIT) and not flight.done:
            raise ConnectionError(f"no answer from the store within {WAIT} s")
        if flight.error is not None:
            raise ConnectionError(str(flight.error)) from flight.error
        if flight.result is None:
            return read()  # the leader died without reading
        return flight.result
