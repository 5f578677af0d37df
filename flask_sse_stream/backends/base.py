"""The backend boundary: what a store-and-publish backend does for the per-app core.

A backend allocates ids, stores id'd events, publishes every event to the
streams of this process through the fan-out, and reports what its store
holds (:class:`~flask_sse_stream.replay.StoreFacts`); the replay decision is
not its business. Backends move and store encoded events, they never encode
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..access import Ending
from ..event import Event
from ..replay import StoreFacts


class Backend(Protocol):
    def send(self, channel: str, event: Event, *, with_id: bool) -> Event:
        """Send ``event`` (encoded, without id) to ``channel``; return it as sent.

        With ``with_id`` it gets the next id and is stored (unless the store
        keeps nothing), atomically with publishing, so that publish order is
        id order. Never waits on a client.
        """
        ...

    def read_store(self, channels: Sequence[str], after: int | None = None) -> StoreFacts:
        """What the store holds for ``channels`` now; streams of them in this process are subscribed already.

        ``after``: the resume point of the stream that asks (a read kept for
        streams that open soon after may serve it: see ``recent_reads``).
        """
        ...

    def release(self, channels: Sequence[str]) -> None:
        """No stream of this process serves ``channels`` any more (a per-channel subscription may end)."""
        ...

    def end_streams(self, ending: Ending) -> int:
        """End the streams ``ending`` matches, here and in every other process; how many ended here."""
        ...

    def count_streams(self, channel: str | None = None) -> dict[str, int]:
        """Open streams per channel in every process of the app (the key ``""``: all of them).

        With ``channel``, the counts of that channel (and ``""``) at least: the others may be left out.
        """
        ...

    def stored(self, channel: str) -> list[Event]:
        """The stored events of ``channel``, oldest first, with every field (for ``SSE.history``)."""
        ...

    def store_sizes(self) -> dict[str, int]:
        """Every channel that has a store, and how many events it holds (for ``flask sse stats``)."""
        ...

    def unready(self) -> str | None:
        """Why this process cannot serve streams now, in a few words without any address; None if it can."""
        ...

    def close(self) -> None:
        """Release connections and background work."""
        ...
