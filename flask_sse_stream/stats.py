"""Counters of what one app's streams did in this process, and the numbers ``SSE.stats`` reports."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

#: Why a stream is refused: over ``SSE_MAX_CONNECTIONS`` (503), over
#: ``SSE_MAX_CONNECTIONS_PER_CLIENT`` (429), by ``@sse.authorize`` (403), a bad request (400).
REFUSALS = ("limit", "client_limit", "authorization", "bad_request")
#: The running totals, in the order ``SSE.stats`` lists them.
TOTALS = (
    "events_sent",
    "bytes_written",
    "streams_opened",
    "replays_served",
    "events_replayed",
    "resets_sent",
    "slow_clients_dropped",
    "streams_ended",
    "streams_expired",
    "redis_reconnects",
    "store_reads",
)


class Counters:
    """Running totals since the app started in this process.

    Each is incremented where the thing happens; under threads an increment
    may rarely be lost (they are plain ``int`` attributes), never under gevent.
    """

    __slots__ = (*TOTALS, "refused")

    def __init__(self) -> None:
        #: Events sent through ``send_new_event`` in this process.
        self.events_sent = 0
        #: Bytes written to streams: events, replays and comments (with the chunked
        #: framing where the library writes the socket itself).
        self.bytes_written = 0
        #: Streams opened.
        self.streams_opened = 0
        #: Streams that replayed stored events on connect, and how many events.
        self.replays_served = 0
        self.events_replayed = 0
        #: Reset events sent (a resume point no longer in the store).
        self.resets_sent = 0
        #: Streams disconnected for falling more than ``SSE_QUEUE_SIZE`` events behind.
        self.slow_clients_dropped = 0
        #: Streams ended by ``SSE.end_streams`` (from any process), and at their admission's expiry or maximum age.
        self.streams_ended = 0
        self.streams_expired = 0
        #: Times the Redis subscription was lost and made again.
        self.redis_reconnects = 0
        #: Reads of the store for streams that open (those that open together or soon after share one).
        self.store_reads = 0
        #: Streams refused, by reason (:data:`REFUSALS`).
        self.refused = dict.fromkeys(REFUSALS, 0)


def numbers(streams: int, by_channel: dict[str, int], counters: Counters) -> dict[str, Any]:
    """``SSE.stats``: open streams, per channel, then the running totals."""
    totals: dict[str, Any] = {}
    for name in TOTALS:
        totals[name] = getattr(counters, name)
        if name == "streams_opened":
            refused = dict(counters.refused)
            totals["streams_refused"] = sum(refused.values())
            totals["streams_refused_by_reason"] = refused
    return {"streams": streams, "streams_by_channel": by_channel, **totals}


class Latency:
    """A histogram of seconds, kept cheaply where it is observed and read when metrics are collected.

    ``counts[i]`` counts the observations at most ``BOUNDS[i]`` and above the
    bound before it; the last one counts those above every bound.
    """

    __slots__ = ("counts", "sum")

    #: Bucket bounds, in seconds: from 50 µs (an in-process send) to 5 s (Redis's command timeout).
    BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.BOUNDS, seconds)] += 1
        self.sum += seconds
