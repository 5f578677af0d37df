"""Local fan-out: the open streams of one app in this process, indexed by channel.

A backend calls :meth:`Fanout.deliver` once per event, in id order; the
fan-out appends that event to the queue of each stream of its channel.
Delivering never blocks and never waits on a client.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from .access import Ending, describe
from .concurrency import allocate_lock, later, on_a_hub, thread_ident
from .event import Event
from .replay import ReplayPlan, StoreFacts, in_band
from .spread import Telling
from .stats import Counters
from .stream import GRACE, Stream

log = logging.getLogger("flask_sse_stream")

#: Seconds an :class:`Ending` is remembered after it arrived, and at most how
#: many: a stream whose authorization began before one that matches it
#: arrived ends as soon as it is added (its authorizer may have read what the
#: ending undid). Past either bound, every stream whose authorization began
#: before the forgotten ending arrived ends: a rare extra reconnection.
REMEMBER_ENDINGS = 60.0
MAX_ENDINGS = 1000


class Fanout:
    """The open streams of one app in this process, by channel."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters or Counters()
        self._lock = allocate_lock()
        self._channels: dict[str, dict[Stream, None]] = {}
        # channel -> snapshot of its streams, rebuilt after a change, so that
        # deliver() iterates without a lock and without copying.
        self._targets: dict[str, tuple[Stream, ...]] = {}
        self._all: dict[Stream, None] = {}
        # client (Stream.client: its address, or its IPv6 prefix) -> its open streams here
        # (for SSE_MAX_CONNECTIONS_PER_CLIENT).
        self._clients: dict[str | None, dict[Stream, None]] = {}
        # subject -> its open streams here, so that end_streams(subject=...) costs what it ends.
        self._subjects: dict[str, dict[Stream, None]] = {}
        # (arrival, ending) of recent end_streams() calls, oldest first, and
        # the latest arrival among those forgotten.
        self._endings: deque[tuple[float, Ending]] = deque()
        self._forgotten = 0.0
        #: Changes with every stream added or removed (the Redis backend's counts watch it).
        self.version = 0

    def __len__(self) -> int:
        return len(self._all)

    def streams(self) -> list[Stream]:
        return list(self._all)

    def channels(self) -> list[str]:
        """The channels that have streams here."""
        with self._lock:
            return list(self._channels)

    def serves(self, channel: str) -> bool:
        """Whether ``channel`` has streams here (without a lock: a stream that is being added may be missed)."""
        return channel in self._channels

    def streams_by_channel(self) -> dict[str, int]:
        """How many streams each channel has here."""
        with self._lock:
            return {channel: len(members) for channel, members in self._channels.items()}

    def streams_of(self, client: str | None) -> list[Stream]:
        """The streams the client ``client`` (see :attr:`Stream.client`) has open here."""
        with self._lock:
            return list(self._clients.get(client, ()))

    def full_for(self, client: str | None, limit: int, per_client: int | None = None) -> str | None:
        """Why a stream of ``client`` would be refused now: ``"client_limit"``, ``"limit"``, or None."""
        if per_client is not None and len(self._clients.get(client, ())) >= per_client:
            return "client_limit"
        return "limit" if len(self._all) >= limit else None

    def add(self, stream: Stream, limit: int, per_client: int | None = None) -> str | None:
        """Add ``stream`` unless ``limit`` streams, or ``per_client`` of its client's, are open.

        Returns None if it was added, else why not (as :meth:`full_for`).
        """
        with self._lock:
            full = self.full_for(stream.client, limit, per_client)
            if full is not None:
                return full
            self._clients.setdefault(stream.client, {})[stream] = None
            for subject in stream.subjects:
                self._subjects.setdefault(subject, {})[stream] = None
            self._all[stream] = None
            for channel in stream.channels:
                self._channels.setdefault(channel, {})[stream] = None
                self._targets.pop(channel, None)
            self.version += 1
            if stream.since and (self._endings or self._forgotten) and self._ended_meanwhile(stream):
                stream.ending = "ended"
                stream.close(planned=True)  # its opening answers with an empty stream: the client asks again
                self.counters.streams_ended += 1
        return None

    def _ended_meanwhile(self, stream: Stream) -> bool:
        """Whether an ending that matches ``stream`` arrived after its authorization began."""
        if stream.since <= self._forgotten:
            return True
        return any(
            arrived >= stream.since and ending.matches(stream.channels, stream.subjects)
            for arrived, ending in self._endings
        )

    def remove(self, stream: Stream) -> list[str]:
        """Remove ``stream``; the channels that have no stream here any more."""
        emptied: list[str] = []
        with self._lock:
            if stream not in self._all:
                return emptied
            del self._all[stream]
            held = self._clients[stream.client]
            del held[stream]
            if not held:
                del self._clients[stream.client]
            for subject in stream.subjects:
                of_subject = self._subjects[subject]
                del of_subject[stream]
                if not of_subject:
                    del self._subjects[subject]
            for channel in stream.channels:
                members = self._channels.get(channel)
                if members is not None:
                    members.pop(stream, None)
                    if not members:
                        del self._channels[channel]
                        emptied.append(channel)
                self._targets.pop(channel, None)
            self.version += 1
        return emptied

    def deliver(self, channel: str, event: Event) -> None:
        """Queue ``event`` for every stream of ``channel``; never blocks."""
        targets = self._targets.get(channel)
        if targets is None:
            with self._lock:
                members = self._channels.get(channel)
                if not members:
                    return  # not cached: senders may use any number of channels
                targets = self._targets[channel] = tuple(members)
        thread = thread_ident()
        for stream in targets:
            stream.push(event, thread)

    def deliver_except(self, channel: str, event: Event, skip: set[Stream]) -> None:
        """:meth:`deliver`, but not to the streams of ``skip``."""
        thread = thread_ident()
        with self._lock:
            targets = list(self._channels.get(channel, ()))
        for stream in targets:
            if stream not in skip:
                stream.push(event, thread)

    def reset_in_band(
        self, streams: Iterable[Stream], facts: StoreFacts, read: Sequence[str], reset: Event, keeps_history: bool
    ) -> set[Stream]:
        """Tell ``streams``, which may have missed events, on their own connections; those told.

        Each gets the reset event, then the whole store of its channels (from
        ``facts``, a read of ``read``), then live events: what its client would
        get if it came back, without coming back. One this cannot tell (no
        store, or a channel the read lacks) ends, and its client resumes. A
        stream whose own read came later is told too (it cannot be told apart
        from one whose read came before and ended later): it gets one reset
        more, and misses nothing, as the restart's ``upto`` is kept.
        """
        plans: dict[tuple[str, ...], ReplayPlan | None] = {}
        told = set()
        for stream in streams:
            if stream.channels not in plans:
                plans[stream.channels] = in_band(facts, read, stream.channels, keeps_history)
            plan = plans[stream.channels]
            if plan is None or not plan.reset:
                stream.close()
            else:
                stream.restart([reset, *plan.events], plan.upto)
                told.add(stream)
        self.counters.resets_sent += len(told)
        return told

    def close(self, streams: Iterable[Stream], hangup: bool = False) -> list[Stream]:
        """End ``streams`` cleanly; the ones it ended."""
        ended = list(streams)
        for stream in ended:
            stream.close(hangup, planned=hangup)
        return ended

    def close_where(self, matches: Callable[[Stream], bool], hangup: bool = False) -> list[Stream]:
        return self.close((stream for stream in self.streams() if matches(stream)), hangup)

    def end(self, ending: Ending, arrived: float | None = None) -> int:
        """End the streams ``ending`` matches, on an event boundary (their clients ask again); how many.

        ``arrived`` (``time.monotonic()``, now by default): when the ending
        was made, for one that arrives late; the streams whose authorization
        began after that are left alone.
        """
        now = time.monotonic()
        arrived = now if arrived is None else min(arrived, now)
        with self._lock:
            endings = self._endings
            if endings and endings[-1][0] > arrived:
                bisect.insort(endings, (arrived, ending), key=lambda remembered: remembered[0])
            else:
                endings.append((arrived, ending))
            while endings and (len(endings) > MAX_ENDINGS or endings[0][0] < now - REMEMBER_ENDINGS):
                self._forgotten = max(self._forgotten, endings.popleft()[0])
            candidates = self._candidates(ending)
            matched = [
                stream
                for stream in candidates
                if stream.since <= arrived and ending.matches(stream.channels, stream.subjects)
            ]
        for stream in matched:
            stream.ending = "ended"
        end_gracefully(matched)
        self.counters.streams_ended += len(matched)
        if matched:
            log.info("ended %d streams of %s", len(matched), describe(ending))
        return len(matched)

    def _candidates(self, ending: Ending) -> dict[Stream, None]:
        """The streams ``ending`` may match: those of its subject or of its channel, the fewer (under the lock)."""
        of_channel = of_subject = None
        if ending.channel is not None:
            of_channel = self._channels.get(ending.channel, {})
        if ending.subject is not None:
            of_subject = self._subjects.get(ending.subject, {})
        if of_channel is None or (of_subject is not None and len(of_subject) < len(of_channel)):
            return of_subject if of_subject is not None else self._all
        return of_channel

    def end_all_streams(self) -> None:
        """Every stream ends cleanly; its client resumes from its last id (the store may have lost data)."""
        self.close(self.streams())


#: Looks at the streams ended together for those stuck in a write (every :data:`GRACE` seconds); at the
#: last, every one still unfinished is cut.
MAX_LOOKS = 20


def end_gracefully(streams: list[Stream]) -> None:
    """End ``streams`` and their connections; cut those stuck in one write for :data:`GRACE` seconds.

    Their clients come back evenly, in the order they are told, from the
    first told to the spread after the last (see :class:`~flask_sse_stream.spread.Telling`), told
    :data:`TURN` at a time on a hub, so that the first are let in as they come.

    A stream whose client stopped reading cannot finish its write: its
    connection is cut, so that nothing waits on it. One whose writer has not
    had its turn yet (a busy process ending thousands) is left to end cleanly.
    """
    _tell(streams, Telling(len(streams)))
    if streams:
        later(GRACE, _cut_stuck, [(stream, stream.writes) for stream in streams])


#: Streams told per turn of the loop: a greenlet woken meanwhile (a client come back) runs between turns.
TURN = 64


def _tell(streams: list[Stream], telling: Telling, start: int = 0) -> None:
    turn = TURN if on_a_hub() else len(streams)  # OS threads have no loop to share
    for stream in streams[start : start + turn]:
        stream.close(hangup=True, planned=True, telling=telling)
    if start + turn < len(streams):
        later(0, _tell, streams, telling, start + turn)


def _cut_stuck(marked: list[tuple[Stream, int]], looks: int = 1) -> None:
    """Cut the streams still in the write they were in when marked; look again later at the others
    (every one left after :data:`MAX_LOOKS` looks is cut)."""
    unfinished = []
    for stream, writes in marked:
        if stream.finished:
            continue
        if looks >= MAX_LOOKS or (stream.in_write and stream.writes == writes):
            stream.abort()
        else:
            unfinished.append((stream, stream.writes))
    if unfinished:
        later(GRACE, _cut_stuck, unfinished, looks + 1)
