"""The in-process backend: one counter and one store per app, in this process.

Right for ``flask run``, one gevent ``WSGIServer`` and one gunicorn worker.
Several worker processes would each get their own store and counter: use
Redis there.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from ..config import Settings
from ..event import Event
from ..waking import allocate_lock
from .base import Fanout, Replay


class MemoryBackend:
    def __init__(self, settings: Settings, fanout: Fanout) -> None:
        self._deliver = fanout.deliver
        self._max_history = settings.max_history
        self._ttl = settings.history_ttl
        # One lock orders id allocation, storing and fan-out, so that every
        # stream sees events in id order whichever thread sent them. Nothing
        # under it blocks: fan-out only appends to queues.
        self._lock = allocate_lock()
        self._last_id = 0
        self._stores: dict[str, deque[Event]] = {}
        # channel -> the highest id that has left its store, to tell a client
        # that resumes from before it that it missed events (the reset event).
        self._evicted: dict[str, int] = {}

    def publish(self, channel: str, event: Event, *, with_id: bool) -> Event:
        with self._lock:
            if with_id:
                self._last_id += 1
                event = event.with_id(self._last_id)
                if self._max_history:
                    self._store(channel, event)
            self._deliver(channel, event)
        return event

    def replay(self, channels: Sequence[str], after: int | None) -> Replay:
        with self._lock:
            for channel in channels:
                self._expire(channel)
            reset = False
            if after and after > self._last_id:
                # An id this store never gave: the process restarted.
                reset, after = bool(self._max_history), 0
            after = after or 0
            if not self._max_history:
                return Replay(False, [], after)
            if after and any(self._evicted.get(channel, 0) > after for channel in channels):
                reset = True
            found = [event for channel in channels for event in self._stores.get(channel, ()) if event.id > after]  # type: ignore[operator]
        if len(channels) > 1:
            found.sort(key=lambda event: event.id)  # type: ignore[arg-type,return-value]
        return Replay(reset, found, max(after, found[-1].id or 0) if found else after)

    def stored(self, channel: str) -> list[Event]:
        with self._lock:
            self._expire(channel)
            return list(self._stores.get(channel, ()))

    def close(self) -> None:
        pass

    def _store(self, channel: str, event: Event) -> None:
        store = self._stores.get(channel)
        if store is None:
            store = self._stores[channel] = deque()
        elif len(store) >= self._max_history:
            self._evicted[channel] = store.popleft().id  # type: ignore[assignment]
        store.append(event)
        self._expire(channel)

    def _expire(self, channel: str) -> None:
        store = self._stores.get(channel)
        if self._ttl is None or not store:
            return
        deadline = time.monotonic() - self._ttl
        while store and store[0].created <= deadline:
            self._evicted[channel] = store.popleft().id  # type: ignore[assignment]
        if not store:
            del self._stores[channel]
