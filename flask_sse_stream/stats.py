"""Counters of what one app's streams did in this process, and the numbers ``SSE.stats`` reports."""

from __future__ import annotations

from typing import Any


class Counters:
    """Running totals since the app started in this process.

    Each is incremented where the thing happens; under threads an increment
    may rarely be lost (they are plain ``int`` attributes), never under gevent.
    """

    __slots__ = (
        "events_sent",
        "bytes_written",
        "streams_opened",
        "streams_refused",
        "replays_served",
        "events_replayed",
        "resets_sent",
        "slow_clients_dropped",
        "redis_reconnects",
    )

    def __init__(self) -> None:
        #: Events sent through ``send_new_event`` in this process.
        self.events_sent = 0
        #: Bytes written to streams: events, replays and comments (with the chunked
        #: framing where the library writes the socket itself).
        self.bytes_written = 0
        #: Streams opened, and refused with 503 (over ``SSE_MAX_CONNECTIONS``).
        self.streams_opened = 0
        self.streams_refused = 0
        #: Streams that replayed stored events on connect, and how many events.
        self.replays_served = 0
        self.events_replayed = 0
        #: Reset events sent (a resume point no longer in the store).
        self.resets_sent = 0
        #: Streams disconnected for falling more than ``SSE_QUEUE_SIZE`` events behind.
        self.slow_clients_dropped = 0
        #: Times the Redis subscription was lost and made again.
        self.redis_reconnects = 0


def numbers(streams: int, by_channel: dict[str, int], counters: Counters) -> dict[str, Any]:
    """``SSE.stats``: open streams, per channel, then the running totals."""
    totals = {name: getattr(counters, name) for name in Counters.__slots__}
    return {"streams": streams, "streams_by_channel": by_channel, **totals}
