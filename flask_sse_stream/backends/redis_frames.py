"""The stored events of the channels this process serves, decoded once and shared by the streams that replay them.

Each read of the store brings every stored entry of its channels. Without
sharing, each stream that opens would hold its own copy of its replay until
its client has read it; with it, streams hold references to one copy per
stored event, as with the in-process store. A channel's copies are replaced
by each read of it (dropping what left the store) and forgotten when its
last stream here closes.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..event import Event, frame_with_id


class Frames:
    def __init__(self) -> None:
        self._by_channel: dict[str, dict[int, Event]] = {}

    def events(self, channel: str, entries: Iterable[tuple[int, bytes]], keep: bool) -> list[Event]:
        """``entries`` (id, frame without its id line) as events, reusing those decoded before; kept if ``keep``."""
        known = self._by_channel.get(channel, {})
        fresh: dict[int, Event] = {}
        for id, frame in entries:
            event = known.get(id)
            fresh[id] = event if event is not None else Event(id, None, None, None, frame_with_id(id, frame))
        if keep:
            self._by_channel[channel] = fresh
        return list(fresh.values())

    def forget(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self._by_channel.pop(channel, None)


def split_entry(entry: bytes) -> tuple[int, int, int, bytes, bytes]:
    """A stored entry (see :mod:`.redis_scripts`) as (id, ms, seq, meta, frame without its id line)."""
    head, rest = entry.split(b"\n", 1)
    id, ms, size, seq = (int(part) for part in head.split(b" "))
    return id, ms, seq, rest[:size], rest[size:]
