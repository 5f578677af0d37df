"""The ``retry:`` that a stream ended for a planned reason writes last: its client comes back within the spread.

One stream alone draws its moment at random. Streams ended together (a
SIGTERM, one ``end_streams``) are told one after another, as their writers
get their turn, which takes a busy process a while (T): a :class:`Telling`
gives the k-th told of n the retry that brings its client back in the k-th
1/n of the time from the first told to the spread after the last (T + spread,
T at the pace so far). Their clients come back evenly, n / (T + spread) a
second, the first told first; each within the spread of its own end.
"""

from __future__ import annotations

import random
import time


def retry_block(seconds: float) -> bytes:
    return b"retry: %d\n\n" % int(seconds * 1000)


def farewell(spread: float) -> bytes | None:
    """A ``retry:`` block drawn in ``spread`` seconds (None when ``spread`` is 0)."""
    return retry_block(random.random() * spread) if spread else None


class Telling:
    """The retries of ``count`` streams ended together, in the order their writers tell them."""

    __slots__ = ("count", "first", "told")

    def __init__(self, count: int) -> None:
        self.count, self.first, self.told = count, 0.0, 0

    def next(self, spread: float) -> bytes:
        """The ``retry:`` block of the next stream told, whose spread is ``spread`` seconds."""
        k, self.told, now = self.told, self.told + 1, time.monotonic()
        if k == 0:
            self.first = now
        # When the last will be told, at the pace since the first (the closes before it say nothing of it).
        done = now + (now - self.first) * (self.count - k) / k if k else now
        # From the first told to the spread after the last: the k-th of n in its 1/n of that.
        back = self.first + (done - self.first + spread) * (min(k, self.count - 1) + random.random()) / self.count
        return retry_block(min(spread, max(0.0, back - now)))
