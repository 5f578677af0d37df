"""The one Redis subscription of a process (per app): it reads the app's pub/sub channels and fans out.

It runs in a ``threading.Thread``: a greenlet in a monkey-patched process, an
OS thread otherwise. It subscribes to the control channel and to the events:
of the whole app, or of the channels this process serves (see
:mod:`.redis_channels`). Whatever ends its runner (Redis going away, an
error, a kill), it subscribes again, and then recovers: one consistent read
of the store, which also publishes a marker, so the messages that arrived
before the marker are known to be in that read and those after it to be
newer (:mod:`.redis_recovery`).

- If Redis kept its data, the open streams get what they missed from the
  store (the catch-up), each event once, in id order: delivered when the
  marker comes back, together with what the subscription received until
  then, so that a live-only event keeps its place among them; the streams of
  a channel that missed what the store cannot bring back end cleanly.
- If Redis lost data (its counter is below what some process has seen: that
  process moves it past, and reports the ids that may be lost), or what the
  streams missed has left the store, every open stream is told in-band, on
  its own connection: the reset event, the whole store of its channels, then
  live events (``Fanout.reset_in_band``), so that no client reconnects for
  it. So are the streams of a channel that missed what the store could not
  bring back. Without a store (``SSE_MAX_HISTORY = 0``) no reset is sent:
  those streams end cleanly, and their clients resume.

While running, an id at or below the last one delivered means the counter
went back under a process that had not seen the higher ids: the counter is
moved past them, and the control message that reports it makes every
process read the store again and tell its streams in-band.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from ..event import Event, frame_with_id, reset_frame
from ..replay import StoreFacts, missed, plan
from ..stream import Stream
from .redis_connection import COMMAND_TIMEOUT
from .redis_recovery import Window
from .redis_runner import Resync, Runner, Subscriber

log = logging.getLogger("flask_sse_stream.redis")

_MESSAGE = (b"message", b"smessage")
_SUBSCRIBED = (b"subscribe", b"ssubscribe")
_UNSUBSCRIBED = (b"unsubscribe", b"sunsubscribe")
_LIVE = (None, None, None, None)

#: Seconds the catch-up's marker may take to come back through the subscription.
MARKER_WAIT = COMMAND_TIMEOUT


class Listener(Runner):
    def __init__(self, backend: Subscriber) -> None:
        super().__init__(backend)
        self._reset = Event(None, None, None, None, reset_frame(backend.reset_event))
        # What it delivered, across runners: the highest id, the last seq of
        # each channel served here, whether it ever read the store, the highest
        # `lost` it has acted on; and the last recovery's read until its marker.
        self.delivered = 0
        self._seq: dict[str, int] = {}
        self._recovered = False
        self._handled_lost = 0
        self._window: Window | None = None

    @property
    def up_now(self) -> bool:
        """Whether the subscription is up now and has recovered since it last was lost (readiness probes)."""
        return self.running() and self._recovered and not self._lost_logged and not self._stopping

    def note_seqs(self, channels: Sequence[str], seqs: Sequence[int]) -> None:
        """A stream read the store of ``channels`` (subscribed already): their seqs then, for channels new here.

        A channel that has received something since its first stream was added
        keeps the last seq the subscription received:
        the streams open on it have that, not what a newer stream read (the
        subscription may be down, or messages still on their way), and a gap
        after it must still be noticed for them.
        """
        for channel, seq in zip(channels, seqs, strict=True):
            self._seq.setdefault(channel, seq)

    @property
    def recoveries(self) -> int:
        """Changes each time the subscription is made again (a read from before may miss what it caught up)."""
        return self._fanout.counters.redis_reconnects

    def view(self, channels: Sequence[str]) -> tuple[int, tuple[int | None, ...]] | None:
        """What the subscription has received of ``channels`` (the last seq of each), None while it recovers.

        A read of the store whose sequences are these is still what the store holds.
        """
        if self._window is not None or not self.up_now:
            return None
        return self.recoveries, tuple(self._seq.get(channel) for channel in channels)

    def forget(self, channels: Sequence[str]) -> None:
        """No stream here serves ``channels`` any more."""
        for channel in channels:
            self._seq.pop(channel, None)

    def _on_replies(self, replies: list[Any]) -> None:
        for reply in replies:
            if reply[0] in _MESSAGE:
                self._on_message(reply[2])
            elif reply[0] in _SUBSCRIBED and self._backend.channels is not None:
                self._backend.channels.confirmed(reply[1])
            elif reply[0] in _UNSUBSCRIBED and reply[1] == self._backend.control_key.encode():
                # Never asked for: a cluster node gave the app's slot away (a
                # failover, a resharding) and with it the sharded subscriptions.
                raise ConnectionError("the Redis Cluster moved the app's slot to another node")

    # -- recovery -------------------------------------------------------------

    def _recover(self, held: list[str]) -> None:
        backend = self._backend
        channels = held if backend.channels is not None else self._fanout.channels()
        marker = os.urandom(8).hex()
        seen = backend.counter.seen  # before the read: what this process sends meanwhile is in it or after it
        facts, seqs = backend.read(channels, marker)
        backend.endings.catch_up()
        # If Redis lost data, the counter goes past what was given.
        lost = backend.counter.move_past(seen)
        first = not self._recovered
        ended = not first and self._cannot_catch_up(facts, lost)
        catch_up = None
        told, url = ended and backend.max_history > 0, backend.connections.url
        if told:
            log.warning("Redis at %s lost data: open streams get the reset event and the store", url)
            self._fanout.reset_in_band(self._fanout.streams(), facts, channels, self._reset, True)
        elif ended:  # nothing stored: no reset event can be sent, the streams end
            log.warning("Redis at %s lost data: open streams end and resume", url)
            self._fanout.end_all_streams()
        if ended:
            self.delivered = max(self.delivered, seen, facts.last_id)
        elif not first:
            # Delivered at the marker, in order with what the subscription receives until then.
            stored = dict(zip(channels, seqs.stored, strict=True))
            catch_up = [
                (channel, event, stored[channel].get(event.id or 0, 0))
                for channel, event in missed(self.delivered, facts, channels)
            ]
        if not first:
            self._fanout.counters.redis_reconnects += 1
            log.warning("resubscribed to Redis at %s", backend.connections.url)
        # First: the streams read the store after this, so no copy to drop.
        covered = frozenset() if first else None if ended else frozenset(channels)
        check = not (first or ended)
        self._window = Window(
            marker.encode(), facts.last_id, covered, backend.max_history > 0,
            before=dict(self._seq) if check else {}, at_read=dict(zip(channels, seqs.now, strict=True)),
            due=time.monotonic() + MARKER_WAIT, catch_up=catch_up, facts=facts, read=tuple(channels), told=told,
        )  # fmt: skip
        self._recovered, self._lost_logged = True, False
        self._handled_lost = max(self._handled_lost, lost)

    def _read_timeout(self) -> float | None:
        window = self._window
        return None if window is None else max(window.due - time.monotonic(), 0.01)

    def _nothing_came(self) -> None:
        """While the catch-up's marker is due: a subscription that does not receive it receives nothing.

        On a Redis Cluster, a subscription made on a node that has just become
        a replica is confirmed and then never gets a message; made again, it
        finds the slot's new master.
        """
        window = self._window
        if window is not None and time.monotonic() >= window.due:
            raise ConnectionError(f"the subscription received nothing for {MARKER_WAIT} s, not even its own marker")

    def _cannot_catch_up(self, facts: StoreFacts, lost: int) -> bool:
        """Whether the open streams, which have every event up to ``delivered``, cannot be caught up exactly."""
        if lost > self._handled_lost and lost >= self.delivered:
            return True  # events they should have had may be lost, or their ids given again
        return plan(self.delivered, facts, self._backend.max_history > 0).reset

    # -- messages -------------------------------------------------------------

    def _take(self, reply: Any) -> bool:
        """An event with nothing to check, delivered in the hub as it arrives; anything else is left to the runner."""
        return self._window is None and reply[0] in _MESSAGE and reply[2][:1] != b"\n" and self._on_event(reply[2])

    def _on_message(self, payload: bytes) -> None:
        if payload[:1] == b"\n":
            kind, value = payload[1:].split(b"\n", 1)
            self._on_control(kind, value)
        elif self._window is not None:
            self._in_window(payload, self._window)
        elif not self._on_event(payload):
            # An id given again: the counter went back under a process that
            # had not seen ours. Move it past; the control message that
            # reports it ends the streams that may have missed something.
            channel, _, seq, _ = payload.split(b"\n", 3)
            if (name := channel.decode()) in self._seq:
                self._seq[name] = int(seq)
            self._backend.counter.move_past(max(self.delivered, self._backend.counter.seen))

    def _on_event(self, payload: bytes) -> bool:
        """Deliver an event (not a control message) that came with no catch-up under way; False, doing nothing,
        for an id given again."""
        channel, id, seq, frame = payload.split(b"\n", 3)
        if id:
            number = int(id)
            if number <= self.delivered:
                return False
            self.delivered = number
            self._backend.counter.saw(number)
        name = channel.decode()
        if not self._fanout.serves(name):  # most messages, with per-user channels, are for other processes
            if name in self._seq:
                self._seq[name] = int(seq)
            return True
        # What the subscription has of a channel served here, even before its first stream's read is noted.
        self._seq[name] = int(seq)
        if id:
            self._fanout.deliver(name, Event(number, None, None, None, frame_with_id(number, frame)))
        else:
            self._fanout.deliver(name, Event(None, None, None, None, frame))
        return True

    def _in_window(self, payload: bytes, window: Window) -> None:
        """An event that came before the catch-up's marker: held back for the catch-up, or delivered unless
        the read had it."""
        channel, id, seq, frame = payload.split(b"\n", 3)
        name = channel.decode()
        if window.catch_up is not None:
            if not self._fanout.serves(name):
                return
            event = Event(int(id), None, None, None, frame_with_id(int(id), frame)) if id else Event(*_LIVE, frame)
            if not window.hold(name, event, int(seq)):
                raise ConnectionError("the catch-up's marker did not come back before too many events did")
            return
        if name in self._seq or self._fanout.serves(name):
            self._seq[name] = int(seq)
        if window.told:
            return  # sent before the read that every stream was told
        if not id:
            window.saw(name, int(seq))
            self._fanout.deliver(name, Event(None, None, None, None, frame))
        elif not window.in_read(name, number := int(id), int(seq)):
            self._fanout.deliver(name, Event(number, None, None, None, frame_with_id(number, frame)))

    def _on_control(self, kind: bytes, value: bytes) -> None:
        window = self._window
        if kind == b"mark" and window is not None and value == window.token:
            self._window = None
            self._at_marker(window)
            self.delivered = max(self.delivered, window.last_id)
            for channel, seq in window.at_read.items():
                if seq > self._seq.get(channel, seq):
                    self._seq[channel] = seq  # what the read covered, live-only events included
        elif kind == b"end":
            self._backend.endings.on_message(value)
        elif kind == b"lost":
            lost = int(value)
            if lost > self._handled_lost and lost >= self.delivered:
                # Read the store again, as after a lost subscription: its streams are told in-band.
                raise Resync(f"ids up to {lost} may have been lost in Redis")
            self._handled_lost = max(self._handled_lost, lost)

    def _at_marker(self, window: Window) -> None:
        """The catch-up's marker came back: deliver what it held, and tell the streams that missed something."""
        items = window.in_order() if window.catch_up is not None else []
        missed_something = set(window.channels_that_missed_something())
        told: set[Stream] = set()
        if missed_something and window.facts is not None:
            log.warning("events of %s were sent while the Redis subscription was down: their streams are reset",
                        ", ".join(sorted(missed_something)))  # fmt: skip
            streams = [stream for stream in self._fanout.streams() if not missed_something.isdisjoint(stream.channels)]
            told = self._fanout.reset_in_band(streams, window.facts, window.read, self._reset, window.keeps_history)
        for channel, event, seq in items:
            if channel in self._seq and seq > self._seq[channel]:
                self._seq[channel] = seq
            if event.id is not None:
                if event.id <= self.delivered:
                    continue
                self.delivered = event.id
                self._backend.counter.saw(event.id)
            if told:
                self._fanout.deliver_except(channel, event, told)
            else:
                self._fanout.deliver(channel, event)

    def _deliver(self, channel: str, event: Event) -> None:
        self.delivered = event.id  # type: ignore[assignment]
        self._backend.counter.saw(event.id)  # type: ignore[arg-type]
        self._fanout.deliver(channel, event)
