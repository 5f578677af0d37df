"""``end_streams`` across processes: a control message, and a short memory for subscriptions that come back.

The process that calls it ends its own matching streams at once, then one
script call stores the ending in ``{prefix}:endings`` (the latest
:data:`KEPT`) and publishes it on the control channel, on the connections
the process already holds. Every other process's listener receives it in
order with the events and ends its matching streams. A listener that lost
its subscription reads, once subscribed again, the endings it missed; if
more were sent than are kept, it ends every stream (each client asks again
and its authorizer decides). A process subscribing for the first time (its
first stream is being authorized) takes the endings of the last
:data:`~flask_sse_stream.fanout.REMEMBER_ENDINGS` seconds, each as if it had
arrived when Redis took it: a stream whose authorization began before that
ends as it opens.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from ..access import Ending
from ..fanout import REMEMBER_ENDINGS, Fanout
from . import redis_scripts
from .redis_connection import RedisConnections

log = logging.getLogger("flask_sse_stream.redis")

#: Endings kept in Redis for subscriptions that come back.
KEPT = 1000


class Endings:
    def __init__(
        self, connections: RedisConnections, key: Callable[..., str], fanout: Fanout, control: str, publish: str
    ) -> None:
        self._connections = connections
        self._keys = [key("ending"), key("endings")]
        self._control, self._publish = control, publish
        self._fanout = fanout
        self._end = connections.client.register_script(redis_scripts.END)
        self._read = connections.client.register_script(redis_scripts.ENDINGS)
        #: The last ending this process's subscription has seen (-1: none read yet).
        self.seen = -1
        #: The latest endings taken (``<seq> <origin>@<ms>``): a copy of Redis from before some of them
        #: (an older snapshot) still holds them, and they must not end streams authorized since.
        self._taken: OrderedDict[bytes, None] = OrderedDict()
        #: The ``<seq> <origin>@<ms>`` of the ending ``seen``: whether Redis still holds that one there.
        self._head = b""
        self._pid = 0
        self._origin = ""

    @property
    def origin(self) -> str:
        """This process, in the endings it sends (its listener skips them: it ended its streams already)."""
        if self._pid != os.getpid():
            self._pid, self._origin = os.getpid(), os.urandom(6).hex()
        return self._origin

    def send(self, ending: Ending) -> int:
        """End the streams ``ending`` matches here, then in every other process; how many ended here."""
        ended = self._fanout.end(ending)
        keys = self._keys + [self._control]
        args = [ending.encode(), self.origin, self._publish, KEPT]
        self._connections.call("end the streams", lambda: self._end(keys=keys, args=args))
        return ended

    def on_message(self, value: bytes, arrived: float | None = None) -> None:
        """An ending published by some process, ``<seq> <origin>@<ms> <json>``; once, however often it comes.

        A subscription that comes back may read an ending from the store of
        endings and receive it too: ending its streams again would end those
        authorized in between for nothing.
        """
        seq, origin, data = value.split(b" ", 2)
        number, taken = int(seq), seq + b" " + origin  # the sender and Redis's time tell it apart
        if number <= self.seen or taken in self._taken:
            return
        self.seen, self._head = number, taken
        self._taken[taken] = None
        if len(self._taken) > KEPT:
            self._taken.popitem(last=False)
        if origin.partition(b"@")[0].decode() != self.origin:
            self._fanout.end(Ending.decode(data), arrived)

    def catch_up(self) -> None:
        """Subscribed (again): end what the endings sent meanwhile match; the first time, those of the last minute.

        After Redis lost data (its count went back: an older snapshot), it
        holds endings this process took already (skipped) beside new ones,
        each dated from when Redis took it.
        """
        known, head = self.seen, self._head
        seq, entries, now_ms, lost = self._connections.call(
            "read the endings", lambda: self._read(keys=self._keys, args=[max(known, 0), head])
        )
        seq, now = int(seq), time.monotonic()  # now: no earlier than when Redis read its clock
        if known < 0 or lost:
            self.seen = 0
            for entry in reversed(entries):
                # Both stamps are whole milliseconds: the age taken 1 ms short, so that an ending
                # is never dated before it was made (a stream authorized just before it would open).
                made_ms = int(entry.split(b" ", 2)[1].partition(b"@")[2] or 0)
                age = max(int(now_ms) - made_ms - 1, 0) / 1000
                if known >= 0 or age <= REMEMBER_ENDINGS:
                    self.on_message(entry, now - age)
            self.seen = seq
            self._head = b" ".join(entries[0].split(b" ", 2)[:2]) if entries else b""
            return
        if seq == known:
            return
        if seq - known > len(entries):
            log.warning("missed more than %d end_streams calls while resubscribing: every stream ends", KEPT)
            self._fanout.end_all_streams()
        for entry in reversed(entries):
            self.on_message(entry)
