"""Calls that arrive together share one result: one read of the store for a crowd of streams."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import gevent

from .waking import GeventWaker, ThreadWaker, allocate_lock, in_gevent, new_waker

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Seconds a caller waits for a result another caller is reading.
WAIT = 15.0


class _Batch(Generic[T]):
    __slots__ = ("done", "result", "error", "waiters")

    def __init__(self) -> None:
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waiters: list[GeventWaker | ThreadWaker] = []


class Batches(Generic[K, T]):
    """``run(key, read)``: callers with the same ``key`` that arrive while a batch is open share its ``read()``.

    The first caller opens the batch, lets the greenlets that are ready join
    it, closes it and only then reads: every caller joined before the read
    began, so the result is at least as recent as the moment each one called.
    Safe from greenlets and threads.
    """

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._open: dict[K, _Batch[T]] = {}

    def run(self, key: K, read: Callable[[], T]) -> T:
        with self._lock:
            batch = self._open.get(key)
            lead = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            else:
                waker = new_waker()
                batch.waiters.append(waker)
        if not lead:
            if not waker.wait(WAIT) and not batch.done:
                raise ConnectionError(f"no answer from the store within {WAIT} s")
            if batch.error is not None:
                raise ConnectionError(str(batch.error)) from batch.error
            return batch.result  # type: ignore[return-value]
        if in_gevent():
            gevent.sleep(0)  # the streams that are ready to run now join this batch
        with self._lock:
            del self._open[key]
        try:
            batch.result = read()
            return batch.result
        except BaseException as error:
            batch.error = error
            raise
        finally:
            batch.done = True
            for waiter in batch.waiters:
                waiter.wake()
