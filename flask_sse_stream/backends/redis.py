"""The Redis backend: ids, store and fan-out shared by every worker and host.

One Lua script allocates the id, stores the event and publishes it, so the
publish order is the id order; the sends that queue up in a process while
its last call is in flight go together in the next one (see
``group_commit``). Each process holds one subscription connection
however many streams and channels it serves (see
:mod:`.redis_listener`): to the channels its streams serve, or to every event
of the app on one pub/sub channel (``SSE_REDIS_SUBSCRIBE``). The keys are
described in :mod:`.redis_scripts`.

The counter never goes back, whatever Redis forgets (see :mod:`.redis_counter`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from ..access import Ending
from ..concurrency import allocate_lock
from ..config import Settings
from ..event import Event, frame_with_id
from ..fanout import Fanout
from ..group_commit import GroupCommit
from ..recent_reads import RecentReads
from ..replay import StoreFacts
from ..single_flight import SingleFlight
from . import redis_scripts
from .redis_channels import ChannelSubscriptions
from .redis_connection import RedisConnections
from .redis_counter import Counter
from .redis_counts import Counts
from .redis_endings import Endings
from .redis_frames import Frames, split_entry
from .redis_listener import Listener
from .redis_recovery import Seqs

T = TypeVar("T")


class _Send(NamedTuple):
    channel: str
    frame: bytes
    with_id: bool
    meta: str

    def size(self) -> int:
        return len(self.frame)


class RedisBackend:
    def __init__(self, settings: Settings, fanout: Fanout) -> None:
        if settings.redis_url is None:
            raise ValueError("the Redis backend needs SSE_REDIS_URL")
        self.fanout = fanout
        self.max_history, self._max_bytes = settings.max_history, settings.max_history_bytes
        self.reset_event = settings.reset_event
        self._prefix = settings.redis_prefix
        self._ttl_ms = int(settings.history_ttl * 1000) if settings.history_ttl else 0
        self._tombstone_ms = int(settings.tombstone_ttl * 1000)
        # PUBLISH and SUBSCRIBE; on a cluster the sharded SPUBLISH and
        # SSUBSCRIBE, whose messages stay on the shard of the app's slot
        # instead of going to every node of the cluster.
        if settings.redis_cluster:
            self.publish_command, self.subscribe_command, unsubscribe = "SPUBLISH", "SSUBSCRIBE", "SUNSUBSCRIBE"
        else:
            self.publish_command, self.subscribe_command, unsubscribe = "PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE"
        #: Per-channel subscriptions, or None when each process subscribes to every event of the app.
        self.channels: ChannelSubscriptions | None = None
        if settings.redis_subscribe == "channels":
            self.channels = ChannelSubscriptions(self.pubsub_name, self.subscribe_command, unsubscribe, fanout.serves)
            self.control_key = self.key("control")
        else:
            self.control_key = self.key("events")
        #: The app's id counter, as this process knows it (see redis_counter).
        self.counter = Counter(self.key, self.control_key, self.publish_command)
        self.connections = RedisConnections(
            settings.redis_url, cluster=settings.redis_cluster, on_connect=self.counter.check_connection
        )
        self.url = self.connections.url
        self.endings = Endings(self.connections, self.key, fanout, self.control_key, self.publish_command)
        self.counts = Counts(self.connections, self.key, fanout, settings.count_interval)
        #: Replayed events decoded once per process, shared by the streams of a channel.
        self.frames = Frames()
        client = self.connections.client
        self._send = client.register_script(redis_scripts.SEND)
        self._sends: GroupCommit[_Send, int] = GroupCommit(self._send_batch, size=_Send.size)
        self.counter.bind(client, self.call)
        self._read = client.register_script(redis_scripts.READ)
        self._lock = allocate_lock()
        self._listener: Listener | None = None
        self._flights: SingleFlight[tuple[str, ...], tuple[StoreFacts, Seqs]] = SingleFlight()
        #: Reads that streams opening soon after take while nothing new came on their channels.
        self._recent: RecentReads[tuple[str, ...], StoreFacts] = RecentReads()
        try:
            self.counter.prime()
        except ConnectionError:
            pass  # Redis is not there yet: before the first send, then

    # -- sending ------------------------------------------------------------

    def send(self, channel: str, event: Event, *, with_id: bool) -> Event:
        self.keep_listening()
        if not self.counter.primed:
            self.counter.prime("send the event")
        meta = json.dumps([event.event, event.retry, event.text, event.data is not event.text]) if with_id else ""
        id = self._sends.submit(_Send(channel, event.frame, with_id, meta))
        return event.with_id(id) if with_id else event

    def _send_batch(self, sends: list[_Send]) -> list[int]:
        """One script call for the sends that queued up while the last one was in flight; their ids."""
        counter = self.counter
        keys = [self.key("id"), self.key("lost"), self.key("clock"), self.control_key]
        keys += [self.key("epoch"), self.key("restart")]
        args: list[bytes | str | int] = [self.max_history, self._ttl_ms, counter.seen, self._tombstone_ms]
        args += [self.publish_command, counter.epoch, self._max_bytes]
        for send in sends:
            keys += [self.key("store", send.channel), self.key("marks", send.channel), self.pubsub_name(send.channel)]
            args += [send.channel, send.frame, int(send.with_id), send.meta]
        epoch, *ids = self.call("send the event", lambda: self._send(keys=keys, args=args))
        numbers = [int(id) if id else 0 for id in ids]
        if epoch:
            counter.learn(epoch, max(numbers))
        return numbers

    # -- reading ------------------------------------------------------------

    def read_store(self, channels: Sequence[str], after: int | None = None) -> StoreFacts:
        listener = self.listener()
        listener.wait_subscribed()
        self.counts.keep_running()
        if self.channels is not None:
            self.channels.hold(channels)
        key = tuple(channels)
        # A recent read of these channels, if nothing of them came since: what the store holds now.
        view = listener.view(channels) if not self._ttl_ms else None
        kept = self._recent.get(key, view) if view is not None else None
        if kept is not None and (not after or after <= kept.last_id):
            return kept
        # Streams that open together (1,000 browsers after a deploy, say)
        # share one read of the store instead of queueing for the pool.
        recovered = listener.recoveries
        facts, seqs = self._flights.run(key, lambda: self.read(channels))
        listener.note_seqs(channels, seqs.now)
        if view is not None:
            self._recent.put(key, facts, (recovered, tuple(seqs.now)))
        return facts

    def end_streams(self, ending: Ending) -> int:
        self.keep_listening()
        return self.endings.send(ending)

    def count_streams(self, channel: str | None = None) -> dict[str, int]:
        return self.counts.read(channel)

    def release(self, channels: Sequence[str]) -> None:
        self.frames.forget(channel for channel in channels if not self.fanout.serves(channel))
        listener = self._listener
        if listener is None:
            return
        if self.channels is not None:
            gone = self.channels.release(channels)
        else:
            gone = [channel for channel in channels if not self.fanout.serves(channel)]
        listener.forget(gone)

    def read(self, channels: Sequence[str], marker: str = "") -> tuple[StoreFacts, Seqs]:
        """One consistent read of ``channels``, and their sequences.

        ``marker``, if given, is published with it, on the control channel, to
        place the read among the messages of the subscription.
        """
        self.fanout.counters.store_reads += not marker  # a stream's read, not a recovery's
        keys = [self.key("id"), self.key("lost"), self.key("clock"), self.control_key, self.key("restart")]
        for channel in channels:
            keys += [self.key("store", channel), self.key("marks", channel)]
        args: list[str | int] = [self._ttl_ms, self._tombstone_ms, marker, self.publish_command]
        last_id, lost, forgotten, now_ms, restart, *per_channel = self.call(
            "read the store", lambda: self._read(keys=keys, args=args)
        )
        stored: list[list[Event]] = []
        gone: list[int | None] = []
        seqs = Seqs([], [])
        for channel, entries, (gone_mark, last_mark, seq) in zip(
            channels, per_channel[::2], per_channel[1::2], strict=True
        ):
            events, left, entry_seqs = self._unexpired(channel, entries, int(now_ms))
            stored.append(events)
            seqs.now.append(int(seq or 0))
            seqs.stored.append(entry_seqs)
            if entries or gone_mark is not None or last_mark is not None:
                # The whole store expired in Redis: its last id left it.
                left = max(left, int(gone_mark or 0), 0 if entries else int(last_mark or 0))
                gone.append(left)
            else:
                gone.append(None)
        self.counter.saw(int(last_id))
        forgotten_range = (int(restart[0] or 0), int(restart[1] or 0))
        facts = StoreFacts(int(last_id), tuple(stored), tuple(gone), int(lost), int(forgotten), forgotten_range)
        return facts, seqs

    def _unexpired(self, channel: str, entries: list[bytes], now_ms: int) -> tuple[list[Event], int, dict[int, int]]:
        """The entries not expired yet, as events with only an id and a frame; the highest expired id; seqs."""
        kept, expired, seqs = [], 0, {}
        for entry in entries:
            id, ms, seq, _, frame = split_entry(entry)
            if self._ttl_ms and ms <= now_ms - self._ttl_ms:
                expired = max(expired, id)
            else:
                kept.append((id, frame))
                seqs[id] = seq
        return self.frames.events(channel, kept, keep=self.fanout.serves(channel)), expired, seqs

    def stored(self, channel: str) -> list[Event]:
        keys = [self.key("id"), self.key("lost"), self.key("clock"), self.control_key, self.key("restart")]
        keys += [self.key("store", channel), self.key("marks", channel)]
        args: list[str | int] = [self._ttl_ms, 0, "", self.publish_command]
        reply = self.call("read the store", lambda: self._read(keys=keys, args=args))
        now_ms, entries = int(reply[3]), reply[5]
        events = []
        for entry in entries:
            id, ms, _, meta, frame = split_entry(entry)
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
            client, sizes = self.connections.node(self.control_key), {}
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
            self.call("ping Redis", self.connections.node(self.control_key).ping)
        except ConnectionError:
            return "Redis does not answer"
        return None

    # -- the process's view ----------------------------------------------------

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
        self.counts.stop()
        self.connections.close()

    # -- internals ----------------------------------------------------------

    def call(self, action: str, command: Callable[[], T]) -> T:
        return self.connections.call(action, command)

    def key(self, kind: str, channel: str | None = None) -> str:
        """``{prefix}:kind[:channel]``: in braces, every key of the app is in one hash slot of a cluster."""
        return f"{{{self._prefix}}}:{kind}" if channel is None else f"{{{self._prefix}}}:{kind}:{channel}"

    def pubsub_name(self, channel: str) -> str:
        """The pub/sub channel that carries the events of ``channel``."""
        return self.key("c", channel) if self.channels is not None else self.control_key
