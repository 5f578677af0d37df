"""What a stream receives before live events: the one replay decision, for every backend.

Backends report facts about their store (:class:`StoreFacts`); :func:`plan`
decides which stored events a stream gets, whether the reset event comes
first, and up to which id queued copies of events are dropped. A stream that
opens asks it, and so does a process whose Redis subscription comes back
(its open streams resume from the last id it delivered, or, when they may
have missed events, get :func:`in_band`: the reset event and the store, on
their own connections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from heapq import merge

from .event import Event


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """One consistent read of the store, for some channels (``stored`` and ``gone`` are per channel)."""

    #: The highest id given so far (0: none).
    last_id: int
    #: Per channel: the stored events, oldest first.
    stored: tuple[list[Event], ...]
    #: Per channel: the highest id that has left its store (trimmed, expired, or
    #: its whole store expired), 0 if none did; ``None`` when nothing is known
    #: of the channel (no store, and no tombstone left).
    gone: tuple[int | None, ...]
    #: Ids up to this one may have been lost or given twice (Redis lost data): 0 if never.
    lost_upto: int = 0
    #: Ids below this one may have left a store whose tombstone has expired too.
    forgotten_below: int = 0
    #: Ids above the first and below the second were given by a Redis that
    #: restarted without them (an older snapshot, a failover): (0, 0) if none.
    forgotten_range: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    #: Send the reset event first: the stream cannot be served exactly.
    reset: bool
    #: The stored events to send, in id order.
    events: list[Event]
    #: The stream has every id'd event of its channels up to this id: drop later copies.
    upto: int


def plan(after: int | None, facts: StoreFacts, keeps_history: bool) -> ReplayPlan:
    """The replay of a stream that resumes after id ``after`` (``None`` or 0: a new stream).

    - Nothing stored (``SSE_MAX_HISTORY = 0``): no replay, no reset, nothing dropped.
    - A new stream: the whole store, no reset.
    - After an id never given (the store restarted), one that may have been
      lost or given twice, or one a restarted Redis forgot: the reset event
      and the whole store.
    - After an id from which some event of its channels left the store (or
      may have, its tombstone expired): the reset event, then what is stored
      after it.
    - Otherwise what is stored after it: exactly what it missed.
    """
    if not keeps_history:
        return ReplayPlan(False, [], 0)
    if not after:
        return _whole(facts, reset=False)
    low, high = facts.forgotten_range
    if after > facts.last_id or after <= facts.lost_upto or low < after < high:
        return _whole(facts, reset=True)
    reset = any(after < facts.forgotten_below if gone is None else gone > after for gone in facts.gone)
    events = _merged(facts, after)
    return ReplayPlan(reset, events, max(after, events[-1].id or 0) if events else after)


def in_band(facts: StoreFacts, read: Sequence[str], channels: Sequence[str], keeps_history: bool) -> ReplayPlan | None:
    """What an open stream of ``channels`` that may have missed events gets on its own connection.

    As if its client had come back with an id the store can no longer serve:
    the reset event, then the whole store of its channels, from ``facts``
    (the read of ``read``); nothing without a store. None if ``read`` lacks
    one of ``channels``.
    """
    if not keeps_history:
        return ReplayPlan(False, [], 0)
    index = {channel: n for n, channel in enumerate(read)}
    if any(channel not in index for channel in channels):
        return None
    stored = tuple(facts.stored[index[channel]] for channel in channels)
    events = [event for event in merge(*stored, key=_id)] if len(stored) > 1 else list(stored[0])
    return ReplayPlan(True, events, facts.last_id)


def missed(after: int, facts: StoreFacts, channels: Sequence[str]) -> list[tuple[str, Event]]:
    """The stored events of ``channels`` (those ``facts`` describe) after ``after``, with their channel, in id order."""
    tagged = [
        [(channel, event) for event in events if _id(event) > after]
        for channel, events in zip(channels, facts.stored, strict=True)
    ]
    return list(merge(*tagged, key=lambda item: _id(item[1])))


def _whole(facts: StoreFacts, reset: bool) -> ReplayPlan:
    events = _merged(facts, 0)
    return ReplayPlan(reset, events, events[-1].id or 0 if events else 0)


def _merged(facts: StoreFacts, after: int) -> list[Event]:
    """The stored events with an id above ``after``, all channels merged in id order."""
    if len(facts.stored) == 1:
        return [event for event in facts.stored[0] if event.id > after]  # type: ignore[operator]
    return [event for event in merge(*facts.stored, key=_id) if event.id > after]  # type: ignore[operator]


def _id(event: Event) -> int:
    return event.id or 0
