"""The Redis backend: ids, store and fan-out shared by every worker and host.

One Lua script allocates the id, stores the event and publishes it, so the
publish order is the id order. All channels of an app share one Redis pub/sub
channel (``<prefix>:events``), so each process holds one subscription however
many streams and channels it serves, and never misses an event on a channel it
has just started serving. Each process fans events out to its own streams.

Keys, under ``SSE_REDIS_PREFIX`` (``sse``):

- ``sse:id``: the last id given;
- ``sse:store:<channel>``: a list of stored entries, oldest first;
- ``sse:evicted:<channel>``: the highest id trimmed or expired from that store;
- ``sse:last:<channel>``: the last id stored there (the store itself expires
  with ``SSE_HISTORY_TTL``; this tells a resuming client that it missed it);
- ``sse:epoch``: a random token, set when missing: a new one means Redis lost its data;
- ``sse:events``: the pub/sub channel.

A stored entry is ``b"<id> <ms> <len(meta)>\\n" + meta + frame``, where
``meta`` is JSON ``[event, retry, data]`` for :meth:`SSE.history`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from ..batches import Batches
from ..config import Settings
from ..event import Event
from ..waking import allocate_lock
from .base import Fanout, Replay

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("SSE_REDIS_URL needs redis-py: pip install 'flask-sse-stream[redis]'") from error

log = logging.getLogger("flask_sse_stream.redis")

#: Seconds a command may take before ``send_new_event`` gives up with an error.
COMMAND_TIMEOUT = 5.0
#: Connections to Redis per process, the subscription's included: the rest
#: serve sending and reading the store.
POOL_SIZE = 8
#: Seconds to wait for a connection to Redis.
CONNECT_TIMEOUT = 2.0
#: Seconds between attempts to resubscribe after losing Redis (doubling up to the cap).
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

_PUBLISH = """
local with_id, max, ttl = ARGV[3] == '1', tonumber(ARGV[4]), tonumber(ARGV[5])
local id, frame = '', ARGV[2]
if with_id then
  id = redis.call('INCR', KEYS[1])
  frame = 'id: ' .. id .. '\\n' .. frame
  if max > 0 then
    local t = redis.call('TIME')
    local now = t[1] * 1000 + math.floor(t[2] / 1000)
    local evicted = nil
    if redis.call('EXISTS', KEYS[2]) == 0 then
      evicted = redis.call('GET', KEYS[5])  -- the whole store expired: its last id left it
    end
    redis.call('RPUSH', KEYS[2], id .. ' ' .. now .. ' ' .. #ARGV[6] .. '\\n' .. ARGV[6] .. frame)
    redis.call('SET', KEYS[5], id)
    local excess = redis.call('LLEN', KEYS[2]) - max
    if excess > 0 then
      evicted = string.match(redis.call('LINDEX', KEYS[2], excess - 1), '^(%d+) ')
      redis.call('LTRIM', KEYS[2], excess, -1)
    end
    if ttl > 0 then
      while true do
        local head = redis.call('LINDEX', KEYS[2], 0)
        if not head then break end
        local hid, ms = string.match(head, '^(%d+) (%d+) ')
        if tonumber(ms) > now - ttl then break end
        evicted = hid
        redis.call('LPOP', KEYS[2])
      end
      redis.call('PEXPIRE', KEYS[2], ttl)
    end
    if evicted then
      redis.call('SET', KEYS[3], evicted)
    end
  end
end
redis.call('PUBLISH', KEYS[4], ARGV[1] .. '\\n' .. id .. '\\n' .. frame)
return id
"""


class RedisBackend:
    def __init__(self, settings: Settings, fanout: Fanout) -> None:
        if settings.redis_url is None:
            raise ValueError("the Redis backend needs SSE_REDIS_URL")
        #: The URL without its password, for messages and logs.
        self._url = _redacted(settings.redis_url)
        self._fanout = fanout
        self._prefix = settings.redis_prefix
        self._max_history = settings.max_history
        self._ttl_ms = int(settings.history_ttl * 1000) if settings.history_ttl else 0
        self._events_key = f"{self._prefix}:events"
        # A bounded pool: streams that open at once wait for a connection
        # instead of each opening its own, so the connections held do not
        # grow with the number of clients.
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=POOL_SIZE,
            timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.Redis.from_pool(pool)  # closing the client closes the pool
        self._publish = self._client.register_script(_PUBLISH)
        self._lock = allocate_lock()
        self._listener: _Listener | None = None
        self._batches: Batches[tuple[str, ...], _Snapshot] = Batches()

    # -- sending ------------------------------------------------------------

    def publish(self, channel: str, event: Event, *, with_id: bool) -> Event:
        meta = json.dumps([event.event, event.retry, event.text, event.data is not event.text]) if with_id else ""
        keys = [
            self._key("id"),
            self._key("store", channel),
            self._key("evicted", channel),
            self._events_key,
            self._key("last", channel),
        ]
        args: list[bytes | str | int] = [channel, event.frame, int(with_id), self._max_history, self._ttl_ms, meta]
        with self._unavailable("send the event"):
            id = self._publish(keys=keys, args=args)
        return event.with_id(int(id)) if with_id else event

    # -- reading ------------------------------------------------------------

    def replay(self, channels: Sequence[str], after: int | None) -> Replay:
        self._listen()
        # Streams that open together (1,000 browsers after a deploy, say)
        # share one read of the store instead of queueing for the pool.
        snapshot = self._batches.run(tuple(channels), lambda: self._snapshot(channels))
        if after and after > snapshot.last_id:
            # An id Redis never gave: it lost its data. Without a store, no reset.
            return Replay(bool(self._max_history), snapshot.after(0), 0)
        after = after or 0
        if not self._max_history:
            return Replay(False, [], after)
        found = snapshot.after(after)
        reset = bool(after) and any(gone > after for gone in snapshot.gone)
        return Replay(reset, found, max(after, found[-1].id or 0) if found else after)

    def _snapshot(self, channels: Sequence[str]) -> _Snapshot:
        with self._unavailable("read the store"), self._client.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.get(self._key("id"))
            for channel in channels:
                pipe.lrange(self._key("store", channel), 0, -1)
                pipe.get(self._key("evicted", channel))
                pipe.get(self._key("last", channel))
            now, last_id, *per_channel = pipe.execute()
        now_ms = _milliseconds(now)
        kept: list[list[Event]] = []
        gone: list[int] = []
        for entries, evicted, last in zip(per_channel[::3], per_channel[1::3], per_channel[2::3], strict=True):
            # What left the store: trimmed (evicted), expired in Redis with the
            # whole list (last), or expired but not yet trimmed.
            left = max(int(evicted or 0), 0 if entries else int(last or 0))
            events = []
            for entry in entries:
                id, ms, _, frame = _split(entry)
                if self._ttl_ms and ms <= now_ms - self._ttl_ms:
                    left = max(left, id)
                else:  # a stream needs only the id and the frame
                    events.append(Event(id, None, None, None, frame))
            kept.append(events)
            gone.append(left)
        return _Snapshot(int(last_id or 0), kept, gone)

    def stored(self, channel: str) -> list[Event]:
        with self._unavailable("read the store"), self._client.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.lrange(self._key("store", channel), 0, -1)
            now, entries = pipe.execute()
        now_ms = _milliseconds(now)
        return [event for event, expired in (self._entry(e, now_ms) for e in entries) if not expired]

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._client.close()

    # -- internals ----------------------------------------------------------

    @contextmanager
    def _unavailable(self, action: str) -> Iterator[None]:
        """Turn redis-py's errors into :class:`ConnectionError` naming the server."""
        try:
            yield
        except redis.RedisError as error:
            raise ConnectionError(f"could not {action}: Redis at {self._url} is unavailable ({error})") from error

    def _key(self, kind: str, channel: str | None = None) -> str:
        return f"{self._prefix}:{kind}" if channel is None else f"{self._prefix}:{kind}:{channel}"

    def _entry(self, entry: bytes, now_ms: int) -> tuple[Event, bool]:
        """A stored entry as the event that was sent (for history), and whether it has expired."""
        id, ms, meta, frame = _split(entry)
        event, retry, text, is_json = json.loads(meta)
        data = json.loads(text) if is_json else text
        expired = bool(self._ttl_ms) and ms <= now_ms - self._ttl_ms
        return Event(id, event, data, retry, frame, text=text), expired

    def _listen(self) -> None:
        """Start this process's subscription, once per process, and wait until it is live."""
        listener = self._listener
        if listener is None or listener.pid != os.getpid() or not listener.alive:
            new = None
            # A real lock: nothing inside may yield to another greenlet, so
            # the listener is started (which yields) after releasing it.
            with self._lock:
                listener = self._listener
                if listener is None or listener.pid != os.getpid() or not listener.alive:
                    listener = self._listener = new = _Listener(self)
            if new is not None:
                new.start()
        listener.wait_subscribed()

    def catch_up(self, after: int, channels: Sequence[str]) -> list[tuple[str, Event]]:
        """The stored events of ``channels`` after ``after``, in id order (after a lost subscription)."""
        with self._client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.lrange(self._key("store", channel), 0, -1)
            stores = pipe.execute()
        found = []
        for channel, entries in zip(channels, stores, strict=True):
            for entry in entries:
                event, _ = self._entry(entry, 0)
                if event.id > after:  # type: ignore[operator]
                    found.append((channel, event))
        found.sort(key=lambda item: item[1].id)  # type: ignore[arg-type,return-value]
        return found


def _split(entry: bytes) -> tuple[int, int, bytes, bytes]:
    """A stored entry (see the module docstring) as (id, ms, meta, frame)."""
    head, rest = entry.split(b"\n", 1)
    id, ms, size = (int(part) for part in head.split(b" "))
    return id, ms, rest[:size], rest[size:]


def _milliseconds(time_reply: list[int]) -> int:
    """Redis's TIME reply (seconds, microseconds) in milliseconds."""
    return time_reply[0] * 1000 + time_reply[1] // 1000


def _redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


class _Snapshot:
    """One read of the stores of some channels, shared by the streams that asked together."""

    def __init__(self, last_id: int, kept: list[list[Event]], gone: list[int]) -> None:
        self.last_id = last_id
        self._kept = kept  # per channel: the unexpired events, oldest first
        self.gone = gone  # per channel: the highest id that has left its store

    def after(self, after: int) -> list[Event]:
        """The stored events with an id above ``after``, in id order."""
        found = [event for events in self._kept for event in events if event.id > after]  # type: ignore[operator]
        if len(self._kept) > 1:
            found.sort(key=lambda event: event.id)  # type: ignore[arg-type,return-value]
        return found


class _Listener:
    """The one subscription of a process: reads ``<prefix>:events`` and fans out.

    Runs in a ``threading.Thread``: a greenlet in a monkey-patched process, an
    OS thread otherwise (the hub wakes streams in any thread). If Redis goes
    away it resubscribes by itself, then delivers the id'd events it missed
    from the store.
    """

    def __init__(self, backend: RedisBackend) -> None:
        self.pid = os.getpid()
        self.alive = True
        self._backend = backend
        # Whether it has ever subscribed, and how many attempts have ended,
        # for streams that wait for it (under _changed).
        self._subscribed = False
        self._attempts = 0
        self._changed = threading.Condition()
        # Set to cut the back-off short when a stream waits.
        self._kick = threading.Event()
        self._stopping = False
        #: The highest id delivered, to drop what the catch-up already delivered.
        self._last_id = 0
        self._thread = threading.Thread(target=self._run, name="sse-redis-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_subscribed(self) -> None:
        """Return once it has subscribed; if it has not yet, have it try now and raise if that fails.

        Once subscribed it stays so for this purpose, even while it resubscribes
        after losing Redis: a stream that opens meanwhile replays from the store,
        and the catch-up after resubscribing brings what it missed.
        """
        with self._changed:
            if self._subscribed:
                return
            attempts = self._attempts
            self._kick.set()
            self._changed.wait_for(
                lambda: self._subscribed or self._attempts > attempts, CONNECT_TIMEOUT + COMMAND_TIMEOUT
            )
            if not self._subscribed:
                raise ConnectionError(f"could not subscribe to Redis at {self._backend._url}")

    def _attempted(self, subscribed: bool) -> None:
        with self._changed:
            self._attempts += 1
            self._subscribed = self._subscribed or subscribed
            self._changed.notify_all()

    def stop(self) -> None:
        self._stopping = True

    def _run(self) -> None:
        backend = self._backend
        client = backend._client
        failures = 0
        lost = False
        epoch = None
        while not self._stopping:
            pubsub = client.pubsub()  # type: ignore[no-untyped-call]
            try:
                # The epoch key tells a Redis that lost its data (a restart
                # without persistence): ids then start again from 1.
                client.set(backend._key("epoch"), os.urandom(8).hex(), nx=True)
                start = int(client.get(backend._key("id")) or 0)
                pubsub.subscribe(backend._events_key)
                while pubsub.get_message(timeout=COMMAND_TIMEOUT) is None:
                    pass  # the subscribe confirmation
                current = client.get(backend._key("epoch"))
                if not lost:
                    # Streams read the store once this is set, so anything up
                    # to `start` reaches them by replay.
                    self._last_id = start
                else:
                    if current != epoch:
                        # What the store holds now all came after the loss, and
                        # ids start again from 1: streams must not take the new
                        # events for copies of what they replayed before.
                        self._last_id = 0
                        backend._fanout.ids_restarted()
                    self._catch_up()
                    backend._fanout.counters.redis_reconnects += 1
                    log.warning("resubscribed to Redis at %s", backend._url)
                epoch, lost, failures = current, False, 0
                self._attempted(True)
                while not self._stopping:
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._deliver(message["data"])
            except Exception as error:
                # redis-py reports a connection that went away as a RedisError,
                # or as an OSError/ValueError from a socket closed under it.
                if not isinstance(error, (redis.RedisError, OSError, ValueError)):
                    log.exception("the Redis listener failed; resubscribing")
                elif not lost and epoch is not None:
                    log.warning("lost the Redis subscription at %s: %s; resubscribing", backend._url, error)
                lost = lost or epoch is not None
                self._attempted(False)
                self._kick.wait(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
                self._kick.clear()
                failures += 1
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    pass
        self.alive = False

    def _deliver(self, payload: bytes) -> None:
        channel, id, frame = payload.split(b"\n", 2)
        if id:
            number = int(id)
            if number <= self._last_id:
                return  # delivered by the catch-up already
            self._last_id = number
        self._backend._fanout.deliver(channel.decode(), Event(int(id) if id else None, None, None, None, frame))

    def _catch_up(self) -> None:
        fanout = self._backend._fanout
        for channel, event in self._backend.catch_up(self._last_id, fanout.channels()):
            self._last_id = max(self._last_id, event.id or 0)
            fanout.deliver(channel, event)

    def __repr__(self) -> str:
        return f"<_Listener pid={self.pid} alive={self.alive}>"
