"""Reads of the store that streams opening soon after one another share: a reconnect storm reads each store once.

A read is kept, for its channels, with a stamp of what it saw (a version of
each channel, or the sequence the subscription had received of it); a
stream that opens later takes it while the stamp is unchanged and the read
is younger than :data:`SECONDS`, instead of reading again. Nothing new has
reached those channels since, so the read is what the store holds now (its
``last_id`` may be older: a stream resuming from a later id reads again).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Seconds a read is taken by streams that open after it.
SECONDS = 10.0
#: Reads kept at most (the least recent goes first).
SIZE = 256


class RecentReads(Generic[K, T]):
    def __init__(self, seconds: float = SECONDS, size: int = SIZE) -> None:
        self._seconds, self._size = seconds, size
        self._reads: dict[K, tuple[T, Hashable, float]] = {}

    def get(self, key: K, stamp: Hashable) -> T | None:
        """The read kept for ``key`` if it was stamped ``stamp`` and is recent enough, else None."""
        kept = self._reads.get(key)
        if kept is None or kept[1] != stamp or time.monotonic() - kept[2] > self._seconds:
            return None
        return kept[0]

    def put(self, key: K, value: T, stamp: Hashable) -> None:
        reads = self._reads
        reads.pop(key, None)
        reads[key] = (value, stamp, time.monotonic())
        while len(reads) > self._size:
            reads.pop(next(iter(reads)), None)

    def clear(self) -> None:
        self._reads.clear()
