"""Local fan-out: the open streams of one app in this process, indexed by channel.

A backend calls :meth:`Fanout.deliver` once per event, in id order; the
fan-out appends that event to the queue of each stream of its channel.
Delivering never blocks and never waits on a client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .concurrency import allocate_lock, thread_ident
from .event import Event
from .stats import Counters
from .stream import Stream


class Fanout:
    """The open streams of one app in this process, by channel."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters or Counters()
        self._lock = allocate_lock()
        self._channels: dict[str, dict[Stream, None]] = {}
        # channel -> snapshot of its streams, rebuilt after a change, so that
        # deliver() iterates without a lock and without copying.
        self._targets: dict[str, tuple[Stream, ...]] = {}
        self._all: dict[Stream, None] = {}
        # client address -> its open streams here (for SSE_MAX_CONNECTIONS_PER_CLIENT).
        self._clients: dict[str | None, int] = {}

    def __len__(self) -> int:
        return len(self._all)

    def streams(self) -> list[Stream]:
        return list(self._all)

    def channels(self) -> list[str]:
        """The channels that have streams here."""
        with self._lock:
            return list(self._channels)

    def serves(self, channel: str) -> bool:
        """Whether ``channel`` has streams here (without a lock: a stream that is being added may be missed)."""
        return channel in self._channels

    def streams_by_channel(self) -> dict[str, int]:
        """How many streams each channel has here."""
        with self._lock:
            return {channel: len(members) for channel, members in self._channels.items()}

    def held_by(self, address: str | None) -> int:
        """How many streams the client at ``address`` has open here."""
        return self._clients.get(address, 0)

    def add(self, stream: Stream, limit: int, per_client: int | None = None) -> bool:
        """Add ``stream`` unless ``limit`` streams, or ``per_client`` of its client's, are open; False if full."""
        with self._lock:
            held = self._clients.get(stream.remote_addr, 0)
            if len(self._all) >= limit or (per_client is not None and held >= per_client):
                return False
            self._clients[stream.remote_addr] = held + 1
            self._all[stream] = None
            for channel in stream.channels:
                self._channels.setdefault(channel, {})[stream] = None
                self._targets.pop(channel, None)
        return True

    def remove(self, stream: Stream) -> list[str]:
        """Remove ``stream``; the channels that have no stream here any more."""
        emptied: list[str] = []
        with self._lock:
            if stream not in self._all:
                return emptied
            del self._all[stream]
            held = self._clients.pop(stream.remote_addr) - 1
            if held:
                self._clients[stream.remote_addr] = held
            for channel in stream.channels:
                members = self._channels.get(channel)
                if members is not None:
                    members.pop(stream, None)
                    if not members:
                        del self._channels[channel]
                        emptied.append(channel)
                self._targets.pop(channel, None)
        return emptied

    def deliver(self, channel: str, event: Event) -> None:
        """Queue ``event`` for every stream of ``channel``; never blocks."""
        targets = self._targets.get(channel)
        if targets is None:
            with self._lock:
                members = self._channels.get(channel)
                if not members:
                    return  # not cached: senders may use any number of channels
                targets = self._targets[channel] = tuple(members)
        thread = thread_ident()
        for stream in targets:
            stream.push(event, thread)

    def close(self, streams: Iterable[Stream], hangup: bool = False) -> list[Stream]:
        """End ``streams`` cleanly; the ones it ended."""
        ended = list(streams)
        for stream in ended:
            stream.close(hangup)
        return ended

    def close_where(self, matches: Callable[[Stream], bool], hangup: bool = False) -> list[Stream]:
        return self.close((stream for stream in self.streams() if matches(stream)), hangup)

    def end_all_streams(self) -> None:
        """Every stream ends cleanly; its client resumes from its last id (the store may have lost data)."""
        self.close(self.streams())
