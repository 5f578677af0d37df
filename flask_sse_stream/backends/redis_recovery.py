"""What a process's subscription knows when it comes back: which messages its read covers, and what its streams missed.

After subscribing again, the listener reads the store once (with a marker
published in the same step), catches its streams up from it, and then tells
the messages apart by the marker: those before it were published before the
read, those after it after. :class:`Window` holds that read until its marker
comes back, and then says which channels' streams missed something the store
could not bring back (a live-only event, or an id'd one with
``SSE_MAX_HISTORY = 0``). Each channel numbers its events one by one (its
``seq``), so a gap between the last one received before the connection was
lost and the first one after it, less what the catch-up brought, is exactly
what was missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..event import Event
from ..replay import StoreFacts

#: Bytes of events a catch-up holds back until its marker comes (more: it starts again).
MAX_HELD = 8 << 20


class Seqs(NamedTuple):
    """What a read of the store tells of each channel's sequence, beside the facts the replay needs."""

    #: Per channel read: its seq at the read (0: no event yet).
    now: list[int]
    #: Per channel read: the seq of each stored event, by id.
    stored: list[dict[int, int]]


@dataclass(slots=True)
class Window:
    #: The marker published with the read.
    token: bytes
    #: The last id given when the store was read.
    last_id: int
    #: The channels whose stored events the read brought (None: every channel).
    covered: frozenset[str] | None
    keeps_history: bool
    #: Per channel held: the last seq received before the connection was lost
    #: (only where known: no gap is looked for without it), the seq at the
    #: read, and the seqs the catch-up delivered.
    before: dict[str, int] = field(default_factory=dict)
    at_read: dict[str, int] = field(default_factory=dict)
    caught_up: dict[str, set[int]] = field(default_factory=dict)
    #: Per channel: the first seq that came before the marker.
    first: dict[str, int] = field(default_factory=dict)
    #: When the marker should have come back (time.monotonic()).
    due: float = float("inf")
    #: The catch-up: the stored events the streams missed (channel, event, seq), in id order, and the
    #: messages received before the marker, held back until it comes; None: no catch-up, nothing held.
    catch_up: list[tuple[str, Event, int]] | None = None
    held: list[tuple[str, Event, int]] = field(default_factory=list)
    held_size: int = 0
    #: The read, and its channels: what streams that missed something are told in-band.
    facts: StoreFacts | None = None
    read: tuple[str, ...] = ()
    #: Every open stream was told in-band (Redis lost data): what came before the marker is theirs already.
    told: bool = False

    def hold(self, channel: str, event: Event, seq: int) -> bool:
        """Hold a message back until the marker; False once more than :data:`MAX_HELD` bytes are held."""
        self.saw(channel, seq)
        self.held.append((channel, event, seq))
        self.held_size += len(event.frame)
        return self.held_size <= MAX_HELD

    def in_order(self) -> list[tuple[str, Event, int]]:
        """At the marker: the catch-up, in the order it was sent, each event once.

        The stored events that were not received (sent before the subscription
        was made) come first, then every message received before the marker.
        """
        received = {event.id for _, event, _ in self.held if event.id is not None}
        earlier = [item for item in self.catch_up or () if item[1].id not in received]
        for channel, _, seq in earlier:
            self.caught_up.setdefault(channel, set()).add(seq)
        return earlier + self.held

    def in_read(self, channel: str, id: int, seq: int) -> bool:
        """Whether a message that came before the marker is in the read (so the streams have it already)."""
        self.saw(channel, seq)
        if self.covered is None:
            return id <= self.last_id  # the streams ended: those that open read the store after this
        return channel in self.covered and self.keeps_history and id <= self.last_id

    def saw(self, channel: str, seq: int) -> None:
        self.first.setdefault(channel, seq)

    def channels_that_missed_something(self) -> list[str]:
        """At the marker: the channels whose streams missed an event the store could not bring back."""
        missed = []
        for channel, before in self.before.items():
            next_seq = self.first.get(channel, self.at_read.get(channel, before) + 1)
            brought = self.caught_up.get(channel, set())
            if any(seq not in brought for seq in range(before + 1, next_seq)):
                missed.append(channel)
        return missed
