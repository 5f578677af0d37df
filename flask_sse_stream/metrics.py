"""Prometheus metrics through ``prometheus_client``, when it is installed (:data:`SSE_METRICS`).

In one process the metrics are read from the counters of :attr:`SSE.stats`
when the registry is collected: nothing is added to sending or delivering
but one histogram observation per ``send_new_event``, into a small bucket
array of the app's own.

Under ``prometheus_client``'s multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set, several gunicorn workers), a scrape reads the files every process
writes, so each process copies its counters into ``prometheus_client``'s
metrics once a second (:data:`SYNC_INTERVAL`), in a background greenlet or
thread; ``send_new_event`` observes its histogram directly (a few µs).
"""

from __future__ import annotations

import heapq
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from .core import SSECore
from .stats import REFUSALS, TOTALS, Latency

PREFIX = "flask_sse_stream_"
#: Seconds between two copies of the counters into multiprocess files.
SYNC_INTERVAL = 1.0
#: Help text of each counter (each exposed with ``_total``).
COUNTERS = {
    "events_sent": "Events sent through send_new_event.",
    "bytes_written": "Bytes written to streams: events, replays and comments.",
    "streams_opened": "Streams opened.",
    "replays_served": "Streams that replayed stored events when they opened.",
    "events_replayed": "Stored events replayed to streams that opened or resumed.",
    "resets_sent": "Reset events sent (a resume point no longer in the store).",
    "slow_clients_dropped": "Streams disconnected for falling more than SSE_QUEUE_SIZE events behind.",
    "streams_ended": "Streams ended by end_streams (by channel or subject), from any process.",
    "streams_expired": "Streams ended at their admission's expiry or SSE_MAX_STREAM_AGE.",
    "redis_reconnects": "Times the Redis subscription was lost and made again.",
    "store_reads": "Reads of the store for streams that open (streams opening together or soon after share one).",
}
REFUSED = "Streams refused, by reason: limit (503), client_limit (429), authorization (403), bad_request (400)."
OPEN = "Streams open."
CHANNEL_OPEN = "Streams open per channel, for the channels with the most (SSE_METRICS_CHANNELS)."
OTHER_OPEN = "Streams open on the channels not named in flask_sse_stream_channel_streams_open."
SEND_SECONDS = "Seconds each send_new_event took (checking, encoding, storing, publishing)."


def multiprocess() -> bool:
    """Whether ``prometheus_client`` writes its values to files, for several processes."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


def enable(core: SSECore) -> None:
    """Register ``core``'s metrics as its ``SSE_METRICS`` says (``init_app`` calls it)."""
    choice = core.settings.metrics
    if choice is False:
        return
    try:
        import prometheus_client
    except ImportError:
        return  # SSE_METRICS=True without prometheus_client: no metrics
    if multiprocess():
        _Files.of_this_process().add(core)
    else:
        registry = prometheus_client.REGISTRY if choice is True else choice
        _Collector.of(registry).add(core)


def keep_syncing() -> None:
    """In multiprocess mode, have this process copy its counters (after a fork, say); cheap otherwise."""
    files = _Files.current
    if files is not None and files.pid != os.getpid():
        _Files.of_this_process()


def top_channels(by_channel: dict[str, int], limit: int, allowed: Iterable[str] | None = None) -> dict[str, int]:
    """The ``limit`` channels with the most streams (ties: by name), from ``allowed`` if given."""
    candidates = by_channel.items() if allowed is None else ((c, by_channel[c]) for c in allowed if c in by_channel)
    return dict(heapq.nsmallest(limit, candidates, key=lambda item: (-item[1], item[0])))


def _totals(cores: Iterable[SSECore]) -> tuple[dict[str, int], dict[str, int], int]:
    """The counters of ``cores`` added up: totals, refusals by reason, open streams."""
    totals, refused, streams = dict.fromkeys(TOTALS, 0), dict.fromkeys(REFUSALS, 0), 0
    for core in cores:
        counters = core.counters
        for name in TOTALS:
            totals[name] += getattr(counters, name)
        for reason in REFUSALS:
            refused[reason] += counters.refused[reason]
        streams += len(core.fanout)
    return totals, refused, streams


def _channels(cores: Iterable[SSECore]) -> tuple[dict[str, int], int]:
    """Open streams of the top channels of each core, and of all the others."""
    named: dict[str, int] = {}
    other = 0
    for core in cores:
        by_channel = core.fanout.streams_by_channel()
        top = top_channels(by_channel, core.settings.metrics_channels)
        for channel, count in top.items():
            named[channel] = named.get(channel, 0) + count
        other += sum(by_channel.values()) - sum(top.values())
    return named, other


class _Collector:
    """The metrics of the cores that use one registry, read when it is collected."""

    _by_registry: weakref.WeakKeyDictionary[Any, _Collector] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._cores: weakref.WeakSet[SSECore] = weakref.WeakSet()

    @classmethod
    def of(cls, registry: Any) -> _Collector:
        with cls._lock:
            collector = cls._by_registry.get(registry)
            if collector is None:
                collector = cls._by_registry[registry] = cls()
                registry.register(collector)
        return collector

    def add(self, core: SSECore) -> None:
        latency = Latency()
        core.latency = latency
        self._cores.add(core)

    def describe(self) -> Iterator[Any]:
        return self._families([])

    def collect(self) -> Iterator[Any]:
        return self._families(list(self._cores))

    @staticmethod
    def _families(cores: list[SSECore]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        totals, refused, streams = _totals(cores)
        named, other = _channels(cores)
        yield GaugeMetricFamily(PREFIX + "streams_open", OPEN, value=streams)
        per_channel = GaugeMetricFamily(PREFIX + "channel_streams_open", CHANNEL_OPEN, labels=["channel"])
        for channel, count in sorted(named.items()):
            per_channel.add_metric([channel], count)
        yield per_channel
        yield GaugeMetricFamily(PREFIX + "other_channels_streams_open", OTHER_OPEN, value=other)
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, help_text, value=totals[name])
        by_reason = CounterMetricFamily(PREFIX + "streams_refused", REFUSED, labels=["reason"])
        for reason in REFUSALS:
            by_reason.add_metric([reason], refused[reason])
        yield by_reason
        counts, total = [0] * (len(Latency.BOUNDS) + 1), 0.0
        for core in cores:
            if isinstance(core.latency, Latency):
                counts = [a + b for a, b in zip(counts, core.latency.counts, strict=True)]
                total += core.latency.sum
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, Latency.BOUNDS), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(PREFIX + "send_seconds", SEND_SECONDS, buckets=buckets, sum_value=total)


class _Files:
    """Multiprocess mode: this process's metrics, copied from its counters once a second."""

    current: _Files | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.pid = os.getpid()
        self._cores: weakref.WeakSet[SSECore] = weakref.WeakSet()
        self._counters = {name: Counter(PREFIX + name, text, registry=None) for name, text in COUNTERS.items()}
        self._refused = Counter(PREFIX + "streams_refused", REFUSED, ["reason"], registry=None)
        self._open = Gauge(PREFIX + "streams_open", OPEN, multiprocess_mode="livesum", registry=None)
        self.histogram = Histogram(PREFIX + "send_seconds", SEND_SECONDS, buckets=Latency.BOUNDS, registry=None)
        self._last: dict[str, int] = {}
        # No per-channel series in the files: a file never forgets a label, so
        # channels a client names would use up any budget of them for good.
        # AppChannels gives them at each scrape, from the app's counts.

    @classmethod
    def of_this_process(cls) -> _Files:
        with cls._lock:
            files = cls.current
            if files is None or files.pid != os.getpid():
                files = cls.current = cls()
                threading.Thread(target=files._run, name="sse-metrics", daemon=True).start()
            return files

    def add(self, core: SSECore) -> None:
        core.latency = self.histogram
        self._cores.add(core)

    def _run(self) -> None:
        while _Files.current is self and self.pid == os.getpid():
            self.sync()
            time.sleep(SYNC_INTERVAL)

    def sync(self) -> None:
        """Copy the counters of this process's cores into the files."""
        cores = list(self._cores)
        totals, refused, streams = _totals(cores)
        for name, counter in self._counters.items():
            self._add(name, totals[name], counter)
        for reason in REFUSALS:
            self._add(f"refused:{reason}", refused[reason], self._refused.labels(reason))
        self._open.set(streams)

    def _add(self, key: str, total: int, counter: Any) -> None:
        delta = total - self._last.get(key, 0)
        if delta > 0:  # an app that went away takes its counts with it: counters never go back
            counter.inc(delta)
        self._last[key] = max(total, self._last.get(key, 0))


class AppChannels:
    """The per-channel series of a whole app, read from its stream counts at each scrape (multiprocess mode).

    Register it beside prometheus_client's ``MultiProcessCollector``: the
    channels with the most open streams in every worker now (at most
    :data:`SSE_METRICS_CHANNELS`, the others summed), re-chosen at each
    scrape from :meth:`SSE.count_streams_by_channel` (one Redis call):

    .. code-block:: python

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(AppChannels(sse))
    """

    def __init__(self, sse: Any) -> None:
        self._sse = sse

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        core: SSECore = self._sse._core()
        limit = core.settings.metrics_channels
        if not limit:
            return
        try:
            by_channel = core.count_streams()
        except ConnectionError:
            return  # Redis unreachable: no per-channel series in this scrape
        by_channel.pop("", None)
        top = top_channels(by_channel, limit)
        per_channel = GaugeMetricFamily(PREFIX + "channel_streams_open", CHANNEL_OPEN, labels=["channel"])
        for channel, count in sorted(top.items()):
            per_channel.add_metric([channel], count)
        yield per_channel
        other = sum(by_channel.values()) - sum(top.values())
        yield GaugeMetricFamily(PREFIX + "other_channels_streams_open", OTHER_OPEN, value=other)
