"""The backend boundary: what a store-and-publish backend does for the extension.

A backend allocates ids, stores id'd events and publishes every event to the
streams of this process through ``deliver``; the hub owns the local queues.
Backends move and store encoded events, they never encode them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from ..event import Event
from ..stats import Counters


class Fanout(Protocol):
    """The streams of this process (the hub), as a backend sees them."""

    #: The app's counters in this process.
    counters: Counters

    def deliver(self, channel: str, event: Event) -> None:
        """Called once per event, in id order; never blocks."""
        ...

    def channels(self) -> list[str]:
        """The channels that have streams in this process."""
        ...

    def ids_restarted(self) -> None:
        """The store lost its data: ids start again from 1."""
        ...


class Replay(NamedTuple):
    """What a stream sends on connect, before live events."""

    #: True when the resume point is no longer in the store (or was never
    #: given): the stream sends the reset event first.
    reset: bool
    #: The stored events of the stream's channels after the resume point, in id order.
    events: list[Event]
    #: The client has every id'd event up to this one (the resume point, or
    #: the last replayed): a later copy of one of them is dropped.
    upto: int


class Backend(Protocol):
    def publish(self, channel: str, event: Event, *, with_id: bool) -> Event:
        """Send ``event`` (encoded, without id) to ``channel``; return it as sent.

        With ``with_id`` it gets the next id and is stored (unless the store
        keeps nothing), atomically with publishing, so that publish order is
        id order. Never waits on a client.
        """
        ...

    def replay(self, channels: Sequence[str], after: int | None) -> Replay:
        """The stored events of ``channels`` with an id above ``after`` (``None``: all)."""
        ...

    def stored(self, channel: str) -> list[Event]:
        """The stored events of ``channel``, oldest first."""
        ...

    def close(self) -> None:
        """Release connections and background work."""
        ...
