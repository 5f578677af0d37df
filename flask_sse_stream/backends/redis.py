"""The Redis backend: ids, store and fan-out shared by every worker and host.

One Lua script allocates the id, stores the event and publishes it, so the
publish order is the id order. All channels of an app share one Redis pub/sub
channel (``<prefix>:events``), so each process holds one subscription however
many streams and channels it serves (see :mod:`.redis_listener`), and never
misses an event on a channel it has just started serving. The keys are
described in :mod:`.redis_scripts`.

Every process remembers the highest id it has seen, and each send carries
it: if Redis comes back with a counter below it, the counter is moved past
every id given before (see :mod:`.redis_scripts`) before an id is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..concurrency import allocate_lock
from ..config import Settings
from ..event import Event, frame_with_id
from ..fanout import Fanout
from ..replay import StoreFacts
from ..single_flight import SingleFlight
from . import redis_scripts
from .redis_connection import RedisConnections
from .redis_listener import Listener

T = TypeVar("T")


class RedisBackend:
    def __init__(self, settings: Settings, fanout: Fanout) -> None:
        if settings.redis_url is None:
            raise ValueError("the Redis backend needs SSE_REDIS_URL")
        self.connections = RedisConnections(settings.redis_url)
        self.url = self.connections.url
        self.fanout = fanout
        self.max_history = settings.max_history
        self._prefix = settings.redis_prefix
        self._ttl_ms = int(settings.history_ttl * 1000) if settings.history_ttl else 0
        self._tombstone_ms = int(settings.tombstone_ttl * 1000)
        self.events_key = self.key("events")
        client = self.connections.client
        self._send = client.register_script(redis_scripts.SEND)
        self._move_past = client.register_script(redis_scripts.MOVE_PAST)
        self._read = client.register_script(redis_scripts.READ)
        #: The highest id this process has seen: given, received or read.
        self.seen = 0
        self._lock = allocate_lock()
        self._listener: Listener | None = None
        self._flights: SingleFlight[tuple[str, ...], StoreFacts] = SingleFlight()

    # -- sending ------------------------------------------------------------

    def send(self, channel: str, event: Event, *, with_id: bool) -> Event:
        self.keep_listening()
        meta = json.dumps([event.event, event.retry, event.text, event.data is not event.text]) if with_id else ""
        keys = [self.key("id"), self.key("store", channel), self.key("marks", channel), self.events_key]
        keys += [self.key("lost"), self.key("clock"), self.key("live")]
        args: list[bytes | str | int] = [channel, event.frame, int(with_id), self.max_history, self._ttl_ms, meta]
        args += [self.seen, self._tombstone_ms]
        id = self.call("send the event", lambda: self._send(keys=keys, args=args))
        if not with_id:
            return event
        self.saw(int(id))
        return event.with_id(int(id))

    # -- reading ------------------------------------------------------------

    def read_store(self, channels: Sequence[str]) -> StoreFacts:
        self.listener().wait_subscribed()
        # Streams that open together (1,000 browsers after a deploy, say)
        # share one read of the store instead of queueing for the pool.
        return self._flights.run(tuple(channels), lambda: self.read(channels)[0])

    def read(self, channels: Sequence[str], marker: str = "") -> tuple[StoreFacts, int]:
        """One consistent read of ``channels``, and how many live-only events were sent so far.

        ``marker``, if given, is published with it, to place the read among
        the messages of the subscription.
        """
        keys = [self.key("id"), self.key("lost"), self.key("clock"), self.events_key, self.key("live")]
        for channel in channels:
            keys += [self.key("store", channel), self.key("marks", channel)]
        args: list[str | int] = [self._ttl_ms, self._tombstone_ms, marker]
        last_id, lost, forgotten, now_ms, live, *per_channel = self.call(
            "read the store", lambda: self._read(keys=keys, args=args)
        )
        stored: list[list[Event]] = []
        gone: list[int | None] = []
        for entries, (gone_mark, last_mark) in zip(per_channel[::2], per_channel[1::2], strict=True):
            events, left = self._unexpired(entries, int(now_ms))
            stored.append(events)
            if entries or gone_mark is not None or last_mark is not None:
                # The whole store expired in Redis: its last id left it.
                left = max(left, int(gone_mark or 0), 0 if entries else int(last_mark or 0))
                gone.append(left)
            else:
                gone.append(None)
        self.saw(int(last_id))
        return StoreFacts(int(last_id), tuple(stored), tuple(gone), int(lost), int(forgotten)), int(live)

    def _unexpired(self, entries: list[bytes], now_ms: int) -> tuple[list[Event], int]:
        """The entries not expired yet, as events with only an id and a frame; the highest expired id."""
        events, expired = [], 0
        for entry in entries:
            id, ms, _, frame = split_entry(entry)
            if self._ttl_ms and ms <= now_ms - self._ttl_ms:
                expired = max(expired, id)
            else:
                events.append(Event(id, None, None, None, frame_with_id(id, frame)))
        return events, expired

    def stored(self, channel: str) -> list[Event]:
        keys = [self.key("id"), self.key("lost"), self.key("clock"), self.events_key, self.key("live")]
        keys += [self.key("store", channel), self.key("marks", channel)]
        reply = self.call("read the store", lambda: self._read(keys=keys, args=[self._ttl_ms, 0, ""]))
        now_ms, entries = int(reply[3]), reply[5]
        events = []
        for entry in entries:
            id, ms, meta, frame = split_entry(entry)
            if not (self._ttl_ms and ms <= now_ms - self._ttl_ms):
                event, retry, text, is_json = json.loads(meta)
                data = json.loads(text) if is_json else text
                events.append(Event(id, event, data, retry, frame_with_id(id, frame), text=text))
        return events

    def store_sizes(self) -> dict[str, int]:
        """Every channel with a store, and its length (events past their TTL but not yet trimmed count).

        Found with ``SCAN``, a page of keys at a time, so a large keyspace never blocks Redis.
        """
        prefix = self.key("store", "").encode()
        pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", prefix) + b"*"

        def scan() -> dict[str, int]:
            client, sizes = self.connections.client, {}
            keys = list(client.scan_iter(match=pattern, count=1000, _type="list"))
            for start in range(0, len(keys), 1000):
                pipeline = client.pipeline(transaction=False)
                for key in keys[start : start + 1000]:
                    pipeline.llen(key)
                for key, size in zip(keys[start : start + 1000], pipeline.execute(), strict=True):
                    if size:
                        sizes[key[len(prefix) :].decode(errors="replace")] = size
            return sizes

        return self.call("count the stored events", scan)

    def unready(self) -> str | None:
        """Why streams cannot be served now: no live subscription, or no answer to PING."""
        if not self.listener().up_now:
            return "the Redis subscription is down"
        try:
            self.call("ping Redis", self.connections.client.ping)
        except ConnectionError:
            return "Redis does not answer"
        return None

    # -- the process's view ----------------------------------------------------

    def saw(self, id: int) -> None:
        if id > self.seen:
            self.seen = id

    def move_past(self, floor: int) -> int:
        """Move the counter past ``floor`` if it is below; the ids that may have been lost (``lost``)."""
        keys = [self.key("id"), self.events_key, self.key("lost")]
        return int(self.call("repair the id counter", lambda: self._move_past(keys=keys, args=[floor])))

    def listener(self) -> Listener:
        """This process's subscription, started (or started again) if it is not running."""
        with self._lock:
            listener = self._listener
            if listener is None or not listener.serves_this_process():
                listener = self._listener = Listener(self)
        listener.keep_running()
        return listener

    def keep_listening(self) -> None:
        """If a subscription was started and its runner died, start it again (cheap when it runs)."""
        listener = self._listener
        if listener is not None and not listener.running():
            self.listener()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self.connections.close()

    # -- internals ----------------------------------------------------------

    def call(self, action: str, command: Callable[[], T]) -> T:
        return self.connections.call(action, command)

    def key(self, kind: str, channel: str | None = None) -> str:
        return f"{self._prefix}:{kind}" if channel is None else f"{self._prefix}:{kind}:{channel}"


def split_entry(entry: bytes) -> tuple[int, int, bytes, bytes]:
    """A stored entry (see :mod:`.redis_scripts`) as (id, ms, meta, frame without its id line)."""
    head, rest = entry.split(b"\n", 1)
    id, ms, size = (int(part) for part in head.split(b" "))
    return id, ms, rest[:size], rest[size:]
