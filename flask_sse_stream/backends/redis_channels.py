"""Per-channel subscriptions: which channels this process's one subscription connection holds.

With ``SSE_REDIS_SUBSCRIBE = "channels"`` a process subscribes to a channel
when its first local stream of that channel opens, and unsubscribes when the
last one closes, on its one subscription connection. A stream that opens on a
channel new to this process waits until Redis has confirmed the subscription,
so it is subscribed before it reads the store. While the connection is down,
the channels held stay held: the listener subscribes to them again and
catches their streams up. A channel whose stream gave up waiting (Redis down,
or stalled past the wait) is not asked for again, and one that Redis
confirms after its stream has gone is unsubscribed at once. Safe from greenlets and threads; the commands go out
on the connection under a lock, and the listener reads the confirmations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from ..concurrency import GeventWaker, ThreadWaker, new_waker
from .redis_connection import COMMAND_TIMEOUT, CONNECT_TIMEOUT
from .redis_subscription import Subscription


class ChannelSubscriptions:
    def __init__(
        self, pubsub_name: Callable[[str], str], subscribe: str, unsubscribe: str, served: Callable[[str], bool]
    ) -> None:
        self._name = pubsub_name
        #: Whether a stream of this process serves a channel (or is opening on it).
        self._served = served
        self._subscribe, self._unsubscribe = subscribe, unsubscribe
        # A gevent lock in a monkey-patched process: a send may yield under it.
        self._lock = threading.Lock()
        #: Channels subscribed on the current connection (or on the last one, while it is down).
        self.held: set[str] = set()
        # Channels asked for and not confirmed yet, with whoever waits for them;
        # the connection, and the channels asked for on it.
        self._waiting: dict[str, list[GeventWaker | ThreadWaker]] = {}
        self._subscription: Subscription | None = None
        self._asked: set[str] = set()

    def names(self, channels: Iterable[str]) -> list[str]:
        return [self._name(channel) for channel in channels]

    def hold(self, channels: Sequence[str]) -> None:
        """Return once every channel of ``channels`` is subscribed (or was, before the connection went down).

        Raises :class:`ConnectionError` if Redis does not confirm in time.
        """
        with self._lock:
            new = [channel for channel in channels if channel not in self.held]
            if not new:
                return
            waker = new_waker()
            for channel in new:
                self._waiting.setdefault(channel, []).append(waker)
            self._ask([channel for channel in new if channel not in self._asked])
        deadline = time.monotonic() + CONNECT_TIMEOUT + COMMAND_TIMEOUT
        try:
            while True:
                waker.clear()
                with self._lock:
                    if all(channel in self.held for channel in new):
                        return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionError(f"Redis did not confirm the subscription of {', '.join(new)} in time")
                waker.wait(left)
        finally:
            self._stop_waiting(new, waker)

    def _stop_waiting(self, channels: list[str], waker: GeventWaker | ThreadWaker) -> None:
        """``waker`` no longer waits (confirmed, given up, killed): a channel nobody waits for is not asked again."""
        with self._lock:
            for channel in channels:
                waiting = self._waiting.get(channel)
                if waiting is not None and waker in waiting:
                    waiting.remove(waker)
                    if not waiting:
                        del self._waiting[channel]

    def release(self, channels: Iterable[str]) -> list[str]:
        """Unsubscribe from the channels of ``channels`` that no stream here serves any more; those."""
        with self._lock:
            gone = [channel for channel in channels if channel in self.held and not self._served(channel)]
            self._drop(gone)
            return gone

    def _drop(self, channels: list[str]) -> None:
        """Under the lock: unsubscribe from ``channels`` (if connected; a new connection will not subscribe them)."""
        self.held.difference_update(channels)
        self._asked.difference_update(channels)
        if channels and self._subscription is not None:
            try:
                self._subscription.send(self._unsubscribe, *self.names(channels))
            except ConnectionError:
                pass  # the connection is ending: the next one subscribes to what is held

    def to_subscribe(self, served: Iterable[str]) -> list[str]:
        """For a new connection: the channels to subscribe to with the control channel (held, asked for, served)."""
        with self._lock:
            channels = sorted(self.held | set(self._waiting) | set(served))
            self._asked = set(channels)
            return channels

    def attach(self, subscription: Subscription | None) -> None:
        """The connection commands go to from now on (None: it is down); ask there for what is waited for."""
        with self._lock:
            self._subscription = subscription
            if subscription is not None:
                self._ask([channel for channel in self._waiting if channel not in self._asked])

    def _ask(self, channels: list[str]) -> None:
        """Under the lock: send SUBSCRIBE for ``channels`` if connected (else the next connection will)."""
        if channels and self._subscription is not None:
            try:
                self._subscription.send(self._subscribe, *self.names(channels))
            except ConnectionError:
                return  # the connection is ending: the next one asks for what is waited for
            self._asked.update(channels)

    def confirmed(self, name: bytes) -> None:
        """Redis confirmed the subscription of pub/sub channel ``name``: wake whoever waits for it."""
        with self._lock:
            channel = self._channel_of(name)
            if channel is None:
                return
            waiting = self._waiting.pop(channel, ())
            if not waiting and not self._served(channel):
                # Its stream gave up (Redis stalled past the wait, or was down) and has gone.
                self._drop([channel])
                return
            self.held.add(channel)
            for waker in waiting:
                waker.wake()

    def _channel_of(self, name: bytes) -> str | None:
        prefix = self._name("")
        text = name.decode()
        return text[len(prefix) :] if text.startswith(prefix) else None
