"""The one Redis subscription of a process (per app): it reads ``<prefix>:events`` and fans out.

It runs in a ``threading.Thread``: a greenlet in a monkey-patched process, an
OS thread otherwise. Whatever ends its runner (Redis going away, an error, a
kill), it subscribes again, and then recovers: one consistent read of the
store, which also publishes a marker, so the messages that arrived before
the marker are known to be in that read and those after it to be newer.

- If Redis kept its data, the open streams get what they missed from the
  store (the catch-up), each event once, in id order.
- If Redis lost data (its counter is below what some process has seen: that
  process moves it past, and reports the ids that may be lost), or what the
  streams missed has left the store, every open stream ends cleanly: its
  client resumes with ``Last-Event-ID`` through the replay decision, which
  sends the reset event where the stream cannot be served exactly.

While running, an id at or below the last one delivered means the counter
went back under a process that had not seen the higher ids: the counter is
moved past them, and the control message that reports it ends the streams
that may have missed something, in every process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import gevent

from ..event import Event, frame_with_id
from ..fanout import Fanout
from ..replay import StoreFacts, missed, plan
from .redis_connection import COMMAND_TIMEOUT, CONNECT_TIMEOUT, CONNECTION_ERRORS, RedisConnections
from .redis_recovery import Window
from .redis_subscription import Subscription

log = logging.getLogger("flask_sse_stream.redis")

#: Seconds between attempts to subscribe again after losing Redis (the last repeats).
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class Subscriber(Protocol):
    """What the listener needs of the Redis backend."""

    connections: RedisConnections
    fanout: Fanout
    events_key: str
    max_history: int
    seen: int

    def read(self, channels: Sequence[str], marker: str = "") -> tuple[StoreFacts, int]: ...

    def move_past(self, floor: int) -> int: ...

    def saw(self, id: int) -> None: ...


class Listener:
    def __init__(self, backend: Subscriber) -> None:
        self.pid = os.getpid()
        self._backend = backend
        self._fanout = backend.fanout
        self._lock = threading.Lock()
        self._runner: threading.Thread | None = None
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
        # What it delivered, across runners: the highest id and live-only
        # count, whether it ever read the store, the highest `lost` it has
        # acted on; and the last recovery's read until its marker comes back.
        self.delivered = 0
        self._live = 0
        self._recovered = False
        self._handled_lost = 0
        self._window: Window | None = None

    def __repr__(self) -> str:
        return f"<Listener pid={self.pid} running={self.running()}>"

    # -- the runner ---------------------------------------------------------

    def serves_this_process(self) -> bool:
        return self.pid == os.getpid() and not self._stopping

    @property
    def up_now(self) -> bool:
        """Whether the subscription is up now and has recovered since it last was lost (readiness probes)."""
        return self.running() and self._recovered and not self._lost_logged and not self._stopping

    def running(self) -> bool:
        runner = self._runner
        return runner is not None and runner.is_alive()

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
                self._runner = threading.Thread(target=self._run, name="sse-redis-listener", daemon=True)
                self._runner.start()

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
                subscription = self._subscription = Subscription(self._backend.connections)
                subscription.send("SUBSCRIBE", self._backend.events_key)
                early = self._confirmed(subscription)
                self._recover()
                self._attempted(True)
                failures = 0
                self._on_replies(early)
                while not self._stopping:
                    self._on_replies(subscription.read())
            except gevent.GreenletExit:
                raise  # killed: the next stream or send starts a new runner
            except BaseException as error:  # noqa: BLE001 - whatever it was, subscribe again
                self._failed(error)
                self._attempted(False)
                self._kick.wait(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
                self._kick.clear()
                failures += 1
            finally:
                if subscription is not None:
                    try:
                        subscription.close()
                    except Exception:  # noqa: BLE001 - the connection may be gone already
                        pass

    @staticmethod
    def _confirmed(subscription: Subscription) -> list[Any]:
        """Wait for Redis to confirm the subscription; the messages that came with the confirmation."""
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            replies = subscription.read(left)
            for n, reply in enumerate(replies):
                if reply[0] == b"subscribe":
                    return replies[n + 1 :]
        raise ConnectionError(f"Redis did not confirm the subscription within {COMMAND_TIMEOUT} s")

    def _on_replies(self, replies: list[Any]) -> None:
        for reply in replies:
            if reply[0] == b"message":
                self._on_message(reply[2])

    def _failed(self, error: BaseException) -> None:
        if self._stopping:
            return  # stop() ended the connection
        if not isinstance(error, CONNECTION_ERRORS):
            log.error("the Redis listener failed; resubscribing", exc_info=error)
        elif self._subscribed and not self._lost_logged:
            log.warning("lost the Redis subscription at %s: %s; resubscribing", self._backend.connections.url, error)
        self._lost_logged = True  # one line per loss, not one per attempt

    # -- recovery -------------------------------------------------------------

    def _recover(self) -> None:
        backend = self._backend
        channels = self._fanout.channels()  # after subscribing: a stream that opens later reads later
        marker = os.urandom(8).hex()
        facts, live = backend.read(channels, marker)
        lost = facts.lost_upto
        if facts.last_id < backend.seen:
            lost = backend.move_past(backend.seen)
        first = not self._recovered
        ended = not first and self._cannot_catch_up(facts, lost)
        if ended:
            url = backend.connections.url
            log.warning("Redis at %s lost data: open streams end and resume from their last id", url)
            self._fanout.end_all_streams()
            self.delivered = max(self.delivered, backend.seen)
        elif not first:
            for channel, event in missed(self.delivered, facts, channels):
                self._deliver(channel, event)
            self._fanout.counters.redis_reconnects += 1
            log.warning("resubscribed to Redis at %s", backend.connections.url)
        # First: the streams read the store after this, so no copy to drop.
        covered = frozenset() if first else None if ended else frozenset(channels)
        self._window = Window(
            marker.encode(), facts.last_id, live, covered, not (first or ended),
            backend.max_history > 0, self.delivered, self._live,
        )  # fmt: skip
        self._recovered, self._lost_logged = True, False
        self._handled_lost = max(self._handled_lost, lost)

    def _cannot_catch_up(self, facts: StoreFacts, lost: int) -> bool:
        """Whether the open streams, which have every event up to ``delivered``, cannot be caught up exactly."""
        if lost > self._handled_lost and lost >= self.delivered:
            return True  # events they should have had may be lost, or their ids given again
        return plan(self.delivered, facts, self._backend.max_history > 0).reset

    # -- messages -------------------------------------------------------------

    def _on_message(self, payload: bytes) -> None:
        channel, rest = payload.split(b"\n", 1)
        if not channel:
            kind, value = rest.split(b"\n", 1)
            self._on_control(kind, value)
            return
        id, live, frame = rest.split(b"\n", 2)
        window = self._window
        if not id:
            if window is not None:
                window.saw_live(int(live))
            else:
                self._live = int(live)
            self._fanout.deliver(channel.decode(), Event(None, None, None, None, frame))
        elif window is not None:
            name, number = channel.decode(), int(id)
            if not window.in_read(name, number):
                self._fanout.deliver(name, Event(number, None, None, None, frame_with_id(number, frame)))
        else:
            number = int(id)
            if number <= self.delivered:
                # An id given again: the counter went back under a process that
                # had not seen ours. Move it past; the control message that
                # reports it ends the streams that may have missed something.
                self._backend.move_past(max(self.delivered, self._backend.seen))
                return
            self.delivered = number
            self._backend.saw(number)
            name = channel.decode()
            if self._fanout.serves(name):  # most messages, with per-user channels, are for other processes
                self._fanout.deliver(name, Event(number, None, None, None, frame_with_id(number, frame)))

    def _on_control(self, kind: bytes, value: bytes) -> None:
        window = self._window
        if kind == b"mark" and window is not None and value == window.token:
            self._window = None
            if window.streams_missed_something():
                log.warning("events were sent while the Redis subscription was down: open streams end and resume")
                self._fanout.end_all_streams()
            self.delivered = max(self.delivered, window.last_id)
            self._live = window.live
        elif kind == b"lost":
            lost = int(value)
            if lost > self._handled_lost:
                self._handled_lost = lost
                if lost >= self.delivered:
                    log.warning("ids up to %d may have been lost in Redis: open streams end and resume", lost)
                    self._fanout.end_all_streams()

    def _deliver(self, channel: str, event: Event) -> None:
        self.delivered = event.id  # type: ignore[assignment]
        self._backend.saw(event.id)  # type: ignore[arg-type]
        self._fanout.deliver(channel, event)
