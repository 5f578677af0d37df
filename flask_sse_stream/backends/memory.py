"""The in-process backend: one counter and one store per app, in this process.

Right for ``flask run``, one gevent ``WSGIServer`` and one gunicorn worker.
Several worker processes would each get their own store and counter: use
Redis there.

With ``SSE_HISTORY_TTL``, what a channel leaves behind is bounded: once its
last stored event has expired, its store is dropped and a tombstone (the
highest id it held) is kept for ``SSE_TOMBSTONE_TTL`` seconds; then nothing.
Expired state is swept as the app sends and reads, a few channels at a time.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Sequence

from ..access import Ending
from ..concurrency import allocate_lock
from ..config import Settings
from ..event import Event
from ..fanout import Fanout
from ..recent_reads import RecentReads
from ..replay import StoreFacts

#: Checkpoints of (time, id) kept over the tombstones' lifetime, to tell which ids are that old.
CHECKPOINTS = 32
#: The per-channel dicts are rebuilt once fewer than an eighth of their most channels are left,
#: if they ever held more than this many (a dict of a thousand channels keeps ~40 KB, emptied).
COMPACT_ABOVE = 64


class MemoryBackend:
    def __init__(self, settings: Settings, fanout: Fanout) -> None:
        self._fanout = fanout
        self._counters = fanout.counters
        self._deliver = fanout.deliver
        self._max_history = settings.max_history
        self._max_bytes = settings.max_history_bytes
        self._ttl = settings.history_ttl
        self._tombstone_ttl = settings.tombstone_ttl
        self._window = (settings.history_ttl or 0) + settings.tombstone_ttl
        # One lock orders id allocation, storing and fan-out, so that every
        # stream sees events in id order whichever thread sent them. Nothing
        # under it blocks: fan-out only appends to queues.
        self._lock = allocate_lock()
        self._last_id = 0
        self._stores: dict[str, deque[Event]] = {}
        # channel (with a store) -> the bytes of its events as sent, without their id lines.
        self._bytes: dict[str, int] = {}
        # channel (with a store) -> the highest id that has left its store.
        self._gone: dict[str, int] = {}
        # With a TTL: channels with a store, by the time of their last event
        # (the order in which their stores expire whole); then their
        # tombstones, channel -> (last id, when it expires), in expiry order;
        # and (time, id) checkpoints over the tombstones' lifetime.
        self._last_stored: OrderedDict[str, float] = OrderedDict()
        self._tombstones: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._checkpoints: deque[tuple[float, int]] = deque()
        # The most channels held at once: dicts keep their size after deletions.
        self._peak = 0
        # Without a TTL: each channel's changes, and the reads that streams opening next share.
        self._versions: dict[str, int] = {}
        self._recent: RecentReads[tuple[str, ...], StoreFacts] = RecentReads()

    def send(self, channel: str, event: Event, *, with_id: bool) -> Event:
        with self._lock:
            if with_id:
                self._last_id += 1
                size = len(event.frame)  # without the id line
                event = event.with_id(self._last_id)
                if self._max_history:
                    self._store(channel, event, size)
            self._deliver(channel, event)
        return event

    def read_store(self, channels: Sequence[str], after: int | None = None) -> StoreFacts:
        key = tuple(channels)
        with self._lock:
            # Without a TTL a store changes only as events are stored: streams that open until then share a read.
            stamp = tuple(self._versions.get(channel, 0) for channel in channels) if self._ttl is None else None
            if stamp is not None:
                kept = self._recent.get(key, stamp)
                if kept is not None and (not after or after <= kept.last_id):
                    return kept
            now = time.monotonic()
            self._sweep(now)
            for channel in channels:
                self._expire(channel, now)
            stored = tuple(list(self._stores.get(channel, ())) for channel in channels)
            gone = tuple(self._gone_of(channel) for channel in channels)
            facts = StoreFacts(self._last_id, stored, gone, forgotten_below=self._forgotten_below(now))
            self._counters.store_reads += 1
            if stamp is not None:
                self._recent.put(key, facts, stamp)
            return facts

    def end_streams(self, ending: Ending) -> int:
        return self._fanout.end(ending)

    def count_streams(self, channel: str | None = None) -> dict[str, int]:
        counts = self._fanout.streams_by_channel()
        counts[""] = len(self._fanout)
        return counts

    def stored(self, channel: str) -> list[Event]:
        with self._lock:
            now = time.monotonic()
            self._sweep(now)
            self._expire(channel, now)
            return list(self._stores.get(channel, ()))

    def release(self, channels: Sequence[str]) -> None:
        pass

    def store_sizes(self) -> dict[str, int]:
        with self._lock:
            now = time.monotonic()
            self._sweep(now)
            for channel in list(self._stores):
                self._expire(channel, now)
            return {channel: len(store) for channel, store in self._stores.items() if store}

    def unready(self) -> str | None:
        return None

    def sweep(self) -> None:
        """Drop the stores and tombstones that have expired."""
        with self._lock:
            self._sweep(time.monotonic())

    def close(self) -> None:
        pass

    # -- under the lock -------------------------------------------------------

    def _store(self, channel: str, event: Event, size: int) -> None:
        now = event.created
        store = self._stores.get(channel)
        if store is None:
            store = self._stores[channel] = deque()
            tombstone = self._tombstones.pop(channel, None)
            self._gone[channel] = tombstone[0] if tombstone else 0
            self._bytes[channel] = 0
        elif len(store) >= self._max_history:
            self._pop(channel, store)
        store.append(event)
        held = self._bytes[channel] = self._bytes[channel] + size
        while held > self._max_bytes and len(store) > 1:  # (core refuses an event over it alone)
            held = self._pop(channel, store)
        if self._ttl is None:  # (with a TTL, stores come and go: their reads are not kept)
            self._versions[channel] = self._versions.get(channel, 0) + 1
        else:
            self._last_stored[channel] = now
            self._last_stored.move_to_end(channel)
            self._checkpoint(now, self._last_id)
            self._expire(channel, now)
            self._sweep(now)

    def _pop(self, channel: str, store: deque[Event]) -> int:
        """The oldest event of ``channel`` leaves its store; the bytes left."""
        event = store.popleft()
        self._gone[channel] = event.id  # type: ignore[assignment]
        held = self._bytes[channel] = self._bytes[channel] - _size(event)
        return held

    def _expire(self, channel: str, now: float) -> None:
        store = self._stores.get(channel)
        if self._ttl is None or not store:
            return
        deadline = now - self._ttl
        while store and store[0].created <= deadline:
            self._pop(channel, store)
        if not store:
            self._bury(channel, now)

    def _sweep(self, now: float) -> None:
        if self._ttl is None:
            return
        deadline = now - self._ttl
        while self._last_stored:
            channel, last = next(iter(self._last_stored.items()))
            if last > deadline:
                break
            store = self._stores[channel]
            if store:
                self._gone[channel] = store[-1].id  # type: ignore[assignment]
                store.clear()
            self._bury(channel, last + self._ttl)
        while self._tombstones:
            channel, (_, expires) = next(iter(self._tombstones.items()))
            if expires > now:
                break
            del self._tombstones[channel]
        cutoff = now - self._window
        while self._checkpoints and self._checkpoints[0][0] < cutoff:
            self._checkpoints.popleft()
        self._compact()

    def _compact(self) -> None:
        """Rebuild the per-channel dicts once most of their channels are gone: a dict never shrinks."""
        held = len(self._stores) + len(self._tombstones)
        self._peak = max(self._peak, held)
        if self._peak > COMPACT_ABOVE and held < self._peak // 8:
            self._stores, self._gone, self._bytes = dict(self._stores), dict(self._gone), dict(self._bytes)
            self._last_stored, self._tombstones = OrderedDict(self._last_stored), OrderedDict(self._tombstones)
            self._peak = held

    def _bury(self, channel: str, expired_at: float) -> None:
        """The store of ``channel`` is empty: keep only its tombstone."""
        del self._stores[channel]
        del self._bytes[channel]
        self._last_stored.pop(channel, None)
        self._tombstones[channel] = (self._gone.pop(channel), expired_at + self._tombstone_ttl)
        self._tombstones.move_to_end(channel)

    def _gone_of(self, channel: str) -> int | None:
        if channel in self._stores:
            return self._gone[channel]
        tombstone = self._tombstones.get(channel)
        return None if tombstone is None else tombstone[0]

    def _checkpoint(self, now: float, id: int) -> None:
        if not self._checkpoints or now - self._checkpoints[-1][0] >= self._window / CHECKPOINTS:
            self._checkpoints.append((now, id))

    def _forgotten_below(self, now: float) -> int:
        """Ids below this one may have left a store whose tombstone is gone too (0 without a TTL)."""
        if self._ttl is None:
            return 0
        return self._checkpoints[0][1] if self._checkpoints else self._last_id


def _size(event: Event) -> int:
    """The bytes of a stored event as sent, without its ``id:`` line (as ``SSE_MAX_EVENT_BYTES`` counts them)."""
    return len(event.frame) - len(b"id: \n") - len(str(event.id))
