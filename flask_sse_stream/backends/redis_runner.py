"""The runner of a process's Redis subscription: it connects, subscribes, reads, and starts again.

It runs in the background (``start_background``): a greenlet in a
monkey-patched process, an OS thread otherwise. Whatever ends it (Redis going away, an error, a kill),
it subscribes again after a short back-off, and hands what it reads to the
listener (:mod:`.redis_listener`), which recovers and fans out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gevent

from ..concurrency import start_background
from ..fanout import Fanout
from ..replay import StoreFacts
from .redis_channels import ChannelSubscriptions
from .redis_connection import COMMAND_TIMEOUT, CONNECT_TIMEOUT, CONNECTION_ERRORS, RedisConnections
from .redis_counter import Counter
from .redis_endings import Endings
from .redis_recovery import Seqs
from .redis_subscription import Subscription

log = logging.getLogger("flask_sse_stream.redis")

#: Seconds between attempts to subscribe again after losing Redis (the last repeats).
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_SUBSCRIBED = (b"subscribe", b"ssubscribe")


class Resync(ConnectionError):
    """The subscription is made again and its streams caught up or told in-band, though nothing failed."""


class Subscriber(Protocol):
    """What the listener needs of the Redis backend."""

    connections: RedisConnections
    fanout: Fanout
    control_key: str
    subscribe_command: str
    max_history: int
    reset_event: str
    counter: Counter
    #: Per-channel subscriptions, or None when the process subscribes to the whole app.
    channels: ChannelSubscriptions | None
    endings: Endings

    def read(self, channels: Sequence[str], marker: str = "") -> tuple[StoreFacts, Seqs]: ...


class Runner:
    """Connects, subscribes and reads; :meth:`_recover` and :meth:`_on_replies` are the listener's."""

    def __init__(self, backend: Subscriber) -> None:
        self.pid = os.getpid()
        self._backend = backend
        self._fanout = backend.fanout
        self._lock = threading.Lock()
        # Whether the runner started last still runs (None: none started in this process).
        self._alive: Callable[[], bool] | None = None
        self._subscription: Subscription | None = None
        self._stopping = False
        # Whether it has ever subscribed, and how many attempts have ended,
        # for streams that wait for it (under _changed).
        self._subscribed = False
        self._attempts = 0
        self._changed = threading.Condition()
        # Set to cut the back-off short when a stream waits.
        self._kick = threading.Event()
        self._lost_logged = False

    def __repr__(self) -> str:
        return f"<Listener pid={self.pid} running={self.running()}>"

    # -- the runner ---------------------------------------------------------

    def serves_this_process(self) -> bool:
        return self.pid == os.getpid() and not self._stopping

    def running(self) -> bool:
        alive = self._alive
        return alive is not None and alive()

    def keep_running(self) -> None:
        """Start a runner unless one runs, in the thread that owns the Redis sockets."""
        if self.running():
            return
        home = self._backend.connections.home
        if home is not None and not home.here():
            home.soon(self.keep_running)
            return
        with self._lock:
            if not self.running() and not self._stopping:
                self._alive = start_background(self._run, "sse-redis-listener")

    def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        subscription = self._subscription
        if subscription is not None:
            subscription.interrupt()

    def wait_subscribed(self) -> None:
        """Return once it has subscribed; if it has not yet, have it try now and raise if that fails.

        Once subscribed it stays so for this purpose, even while it subscribes
        again after losing Redis: a stream that opens meanwhile replays from
        the store, and the recovery brings what it missed.
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
                raise ConnectionError(f"could not subscribe to Redis at {self._backend.connections.url}")

    def _attempted(self, subscribed: bool) -> None:
        with self._changed:
            self._attempts += 1
            self._subscribed = self._subscribed or subscribed
            self._changed.notify_all()

    def _run(self) -> None:
        failures = 0
        while not self._stopping:
            subscription = self._subscription = None
            try:
                subscription = self._subscription = Subscription(self._backend.connections, self._backend.control_key)
                held = self._subscribe(subscription)
                early = self._confirmed(subscription, 1 + len(held))
                self._recover(held)
                self._attempted(True)
                failures = 0
                self._on_replies(early)
                while not self._stopping:
                    replies = subscription.read(self._read_timeout(), self._take)
                    if not replies:
                        self._nothing_came()
                    self._on_replies(replies)
            except gevent.GreenletExit:
                raise  # killed: the next stream or send starts a new runner
            except BaseException as error:  # noqa: BLE001 - whatever it was, subscribe again
                self._failed(error)
                self._attempted(False)
                self._refresh()
                self._kick.wait(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
                self._kick.clear()
                failures += 1
            finally:
                if self._backend.channels is not None:
                    self._backend.channels.attach(None)
                if subscription is not None:
                    try:
                        subscription.close()
                    except Exception:  # noqa: BLE001 - the connection may be gone already
                        pass

    def _subscribe(self, subscription: Subscription) -> list[str]:
        """Subscribe to the control channel (and the channels served here); the channels."""
        backend = self._backend
        held = [] if backend.channels is None else backend.channels.to_subscribe(self._fanout.channels())
        names = [backend.control_key] + ([] if backend.channels is None else backend.channels.names(held))
        subscription.send(backend.subscribe_command, *names)
        return held

    def _confirmed(self, subscription: Subscription, count: int) -> list[Any]:
        """Wait for Redis to confirm ``count`` subscriptions; the messages that came with them."""
        deadline, early = time.monotonic() + COMMAND_TIMEOUT, []
        while count and (left := deadline - time.monotonic()) > 0:
            for reply in subscription.read(left):
                if reply[0] in _SUBSCRIBED and count:
                    count -= 1
                    if self._backend.channels is not None:
                        self._backend.channels.confirmed(reply[1])
                else:
                    early.append(reply)
        if count:
            raise ConnectionError(f"Redis did not confirm the subscription within {COMMAND_TIMEOUT} s")
        if self._backend.channels is not None:
            self._backend.channels.attach(subscription)
        return early

    def _refresh(self) -> None:
        """On a cluster, learn again where the app's slot is before subscribing again."""
        try:
            self._backend.connections.refresh()
        except ConnectionError:
            pass  # the cluster does not answer: the next attempt says so

    def _failed(self, error: BaseException) -> None:
        if self._stopping:
            return  # stop() ended the connection
        if isinstance(error, Resync):
            log.warning("%s: reading the store again", error)
            self._lost_logged = True
            return
        if not isinstance(error, CONNECTION_ERRORS):
            log.error("the Redis listener failed; resubscribing", exc_info=error)
        elif self._subscribed and not self._lost_logged:
            log.warning("lost the Redis subscription at %s: %s; resubscribing", self._backend.connections.url, error)
        self._lost_logged = True  # one line per loss, not one per attempt

    def _recover(self, held: list[str]) -> None:
        raise NotImplementedError

    def _read_timeout(self) -> float | None:
        """How long the next read may wait for something (None: for good)."""
        raise NotImplementedError

    def _nothing_came(self) -> None:
        """A read waited its time and nothing came: raises if something should have."""
        raise NotImplementedError

    def _on_replies(self, replies: list[Any]) -> None:
        raise NotImplementedError

    def _take(self, reply: Any) -> bool:
        """Handle ``reply`` where it was read (the gevent hub) if that needs nothing more; False to leave it."""
        raise NotImplementedError
