"""Calls that queue up while one is in flight go together: the sends of a process share Redis round trips.

A send to Redis is a round trip, and on a busy machine most of what it costs
Redis is the round trip itself (reading the request, writing the reply), not
the script it runs. While one caller's call is in flight, the callers that
arrive queue up; when it returns, the first of them runs one call for all of
them (up to a limit), in the order they came. A caller alone pays nothing
more: its call starts at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .concurrency import GeventWaker, ThreadWaker, allocate_lock, new_waker

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")

#: Seconds a queued caller waits between looks at its call (a wake-up that was lost is not a hang).
WAIT = 1.0


class _Call(Generic[I, R]):
    __slots__ = ("item", "size", "waker", "taken", "lead", "done", "result", "error")

    def __init__(self, item: I, size: int) -> None:
        self.item, self.size = item, size
        self.waker: GeventWaker | ThreadWaker | None = None
        #: In a batch that is being run; told to run the next batch; has its outcome.
        self.taken = self.lead = self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[I, R]):
    """``submit(item)``: the result of ``run([..., item, ...])``, one batch of the items submitted meanwhile.

    ``run`` takes the items of a batch in the order they were submitted and
    returns one result per item. An error it raises reaches every caller of
    the batch. A caller killed while queued is taken out (its item is not
    run); one killed while its batch runs leaves the batch to finish, and a
    killed runner hands on to the next caller, so nobody waits for good. Safe
    from greenlets and threads.
    """

    def __init__(
        self,
        run: Callable[[list[I]], Sequence[R]],
        *,
        max_items: int = 64,
        max_size: int = 1 << 20,
        size: Callable[[I], int] = lambda item: 0,
    ) -> None:
        self._run = run
        self._max_items, self._max_size, self._size = max_items, max_size, size
        self._lock = allocate_lock()
        self._queue: deque[_Call[I, R]] = deque()
        self._busy = False

    def submit(self, item: I) -> R:
        call: _Call[I, R] = _Call(item, self._size(item))
        with self._lock:
            self._queue.append(call)
            lead = not self._busy
            self._busy = True
            if not lead:
                call.waker = new_waker()
        if not lead:
            self._wait(call)
            if call.done:
                return self._outcome(call, ran=False)
        return self._lead(call)

    def _wait(self, call: _Call[I, R]) -> None:
        waker = call.waker
        assert waker is not None
        try:
            while not (call.done or call.lead):
                waker.wait(WAIT)
                waker.clear()
        except BaseException:
            self._leave(call)
            raise

    def _leave(self, call: _Call[I, R]) -> None:
        """A queued caller killed: out of the queue unless its batch runs, and on with the lead if it had it."""
        with self._lock:
            if call.taken:
                return
            self._queue.remove(call)
            if call.lead:
                self._hand_on()

    def _lead(self, call: _Call[I, R]) -> R:
        """Run one batch, from the head of the queue (``call`` is there), then hand on to the next caller."""
        with self._lock:
            first = self._queue.popleft()
            batch, size = [first], first.size
            while self._queue and len(batch) < self._max_items and size + self._queue[0].size <= self._max_size:
                size += self._queue[0].size
                batch.append(self._queue.popleft())
            for taken in batch:
                taken.taken = True
        try:
            results = self._run([taken.item for taken in batch])
            for taken, result in zip(batch, results, strict=True):
                taken.result = result
        except BaseException as error:  # noqa: BLE001 - every caller of the batch gets it
            for taken in batch:
                taken.error = error
        finally:
            with self._lock:
                self._hand_on()
            for taken in batch:
                taken.done = True
                if taken.waker is not None:
                    taken.waker.wake()
        return self._outcome(call, ran=True)

    def _hand_on(self) -> None:
        """Under the lock: the next queued caller runs the next batch, or nothing is in flight."""
        if not self._queue:
            self._busy = False
            return
        following = self._queue[0]
        following.lead = True
        assert following.waker is not None
        following.waker.wake()

    @staticmethod
    def _outcome(call: _Call[I, R], ran: bool) -> R:
        error = call.error
        if error is None:
            return call.result  # type: ignore[return-value]
        if ran:
            raise error  # the caller that ran the batch: its own error (or its own kill)
        if isinstance(error, ConnectionError):
            raise ConnectionError(str(error)) from error
        raise ConnectionError(f"the call that carried this one failed ({error!r}): it may or may not have been made")
