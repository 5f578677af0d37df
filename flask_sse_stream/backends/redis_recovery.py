"""What a process's subscription knows when it comes back: which messages its read covers, and what its streams missed.

After subscribing again, the listener reads the store once (with a marker
published in the same step), catches its streams up from it, and then tells
the messages apart by the marker: those before it were published before the
read, those after it after. :class:`Window` holds that read until its marker
comes back, and then says whether the streams missed something the store
could not bring back: a live-only event, or with ``SSE_MAX_HISTORY = 0`` an
id'd one. Ids and live-only events are each numbered one by one for the whole
app, so a gap between what the listener had before and the first message
after subscribing again is exactly what was missed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Window:
    #: The marker published with the read.
    token: bytes
    #: The last id given, and the live-only events sent, when the store was read.
    last_id: int
    live: int
    #: The channels whose stored events the read brought (None: every channel).
    covered: frozenset[str] | None
    #: Whether to look for gaps (not at the first subscription, nor after the streams ended anyway).
    check_gaps: bool
    keeps_history: bool
    #: The highest id, and live-only event, the listener had before it subscribed again.
    delivered_before: int
    live_before: int
    #: The first id'd and live-only messages that came before the marker.
    first_id: int | None = None
    first_live: int | None = None

    def in_read(self, channel: str, id: int) -> bool:
        """Whether a message that came before the marker is in the read (so the streams have it already)."""
        if self.first_id is None:
            self.first_id = id
        if self.covered is None:
            return id <= self.last_id  # the streams ended: those that open read the store after this
        return channel in self.covered and self.keeps_history and id <= self.last_id

    def saw_live(self, live: int) -> None:
        if self.first_live is None:
            self.first_live = live

    def streams_missed_something(self) -> bool:
        """At the marker: did the streams miss an event the store could not bring back?"""
        if not self.check_gaps:
            return False
        next_live = self.first_live if self.first_live is not None else self.live + 1
        if next_live > self.live_before + 1:
            return True  # live-only events were sent while nobody here listened
        if not self.keeps_history:
            next_id = self.first_id if self.first_id is not None else self.last_id + 1
            return next_id > self.delivered_before + 1  # and so were id'd ones, stored nowhere
        return False
