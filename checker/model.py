"""What the checker derives from a history before judging it: sends by data, accepted sends by channel and id."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

from .history import FAILED, INDETERMINATE, OK, History, Send

INFINITY = float("inf")


@dataclass(frozen=True)
class Violation:
    kind: str
    explanation: str
    client: str | None = None
    connection: int | None = None
    ids: tuple[int, ...] = ()
    data: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = "" if self.client is None else f" {self.client} connection {self.connection}:"
        return f"[{self.kind}]{where} {self.explanation}"


def short(data: str, width: int = 16) -> str:
    """``data`` cut for a message (the senders pad their data)."""
    return data if len(data) <= width else data[:width] + "…"


def id_list(ids: list[int], most: int = 12) -> str:
    shown = ", ".join(map(str, ids[:most]))
    return shown + (f" … ({len(ids)} in all)" if len(ids) > most else "")


class Model:
    """Indexes over a history; ``scope`` keys ids by process when ids are counted per process."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.meta = history.meta
        self.by_data: dict[str, Send] = {send.data: send for send in history.sends}
        self.marker_channel = {marker.data: marker.channel for marker in history.markers}
        self.accepted = [s for s in history.sends if s.outcome == OK and s.with_id and s.id is not None]
        self._by_channel: dict[tuple[int, str], list[Send]] = defaultdict(list)
        self.by_id: dict[tuple[int, int], list[Send]] = defaultdict(list)
        for send in self.accepted:
            self._by_channel[self.scope(send.pid), send.channel].append(send)
            self.by_id[self.scope(send.pid), send.id].append(send)  # type: ignore[index]
        for sends in self._by_channel.values():
            sends.sort(key=lambda send: send.id)  # type: ignore[arg-type, return-value]
        self._ids = {key: [send.id for send in sends] for key, sends in self._by_channel.items()}
        #: The data of every event received: a send seen in a stream happened, whatever its answer said.
        self.observed = {event.data for c in history.connections for event in c.events}
        #: (scope, id) given to more than one send: reported once, left out of the loss rule.
        self.twice: set[tuple[int, int]] = set()

    def scope(self, pid: int | None) -> int:
        return (pid or 0) if self.meta.ids_per_process else 0

    def channel_of(self, data: str) -> str | None:
        send = self.by_data.get(data)
        return send.channel if send is not None else self.marker_channel.get(data)

    def accepted_below(self, scope: int, channel: str, high: float) -> list[Send]:
        """Accepted sends of ``channel`` with an id below ``high``, in id order."""
        ids = self._ids.get((scope, channel), [])
        return self._by_channel.get((scope, channel), [])[: bisect.bisect_left(ids, high)]  # type: ignore[arg-type]

    def accepted_above(self, scope: int, channel: str, low: int) -> list[Send]:
        ids = self._ids.get((scope, channel), [])
        return self._by_channel.get((scope, channel), [])[bisect.bisect_right(ids, low) :]  # type: ignore[arg-type]

    def may_have_happened(self, send: Send) -> bool:
        """Accepted, indeterminate, or failed while the store's process died (it may have done it first)."""
        if send.outcome in (OK, INDETERMINATE):
            return True
        return send.outcome == FAILED and self.store_died_during(send)

    def store_died_during(self, send: Send) -> bool:
        """The store's process died while ``send`` was in flight, or Redis stalled (it runs the send after)."""
        for f in self.history.faults:
            if f.kills_store and send.invoke <= f.start <= send.complete:
                return True
            if f.stalls_store and send.invoke <= f.end and f.start <= send.complete:
                return True
        return False

    def lost_since(self, send: Send, t: float) -> bool:
        """A fault that loses data was not over when ``send`` was invoked, and had begun by ``t``."""
        return any(f.loses_data and f.end >= send.invoke and f.start <= t for f in self.history.faults)

    def loss_between(self, a: float, b: float | None) -> bool:
        """A fault that loses data happened between the times ``a`` and ``b`` (False when ``b`` is unknown)."""
        if b is None:
            return False
        low, high = min(a, b), max(a, b)
        return any(f.loses_data and f.start <= high and f.end >= low for f in self.history.faults)

    def maybe_after(self, scope: int, channel: str, since: float) -> list[Send]:
        """Sends of ``channel`` that may have happened (or did) without an accepted id, still running at ``since``
        or invoked after it (so they may have been stored after a send invoked then)."""
        return [
            s
            for s in self.history.sends
            if s.channel == channel
            and s.with_id
            and s.outcome != OK
            and s.complete > since
            and (self.may_have_happened(s) or s.data in self.observed)
            and (not self.meta.ids_per_process or s.pid is None or self.scope(s.pid) == scope)
        ]
