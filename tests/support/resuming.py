"""A client that reconnects as a browser's ``EventSource`` does, and what it saw.

After a clean end of the stream, or a connection that breaks, it opens a new
one with ``Last-Event-ID`` set to the last id it received (none if it has
received none), and carries on. Everything it received, across its
connections, is one list: ``(id, data)`` per event and ``RESET`` per reset
event.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .client import StreamClient

RESET = "reset"
Item = tuple[int | None, str] | str


class ResumingClient:
    def __init__(
        self, port: int, path: str = "/stream", last_event_id: str = "", reset_event: str = "sse-reset"
    ) -> None:
        self.port = port
        self.path = path
        self.reset_event = reset_event
        self.items: list[Item] = []
        self.connections = 0
        #: What it sends as ``Last-Event-ID`` on its next connection (its first one too, if given).
        self.last_event_id = last_event_id
        self.client = self._connect()

    def _connect(self) -> StreamClient:
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        client = StreamClient(self.port, self.path, headers)
        self.connections += 1
        if client.status != 200:
            answer = (client.status, client.body())
            client.close()
            raise AssertionError(f"a reconnection was answered {answer}")
        return client

    def read_until(self, done: Callable[[list[Item]], bool], timeout: float = 20.0) -> list[Item]:
        """Read (reconnecting as a browser would) until ``done(items)``; then all items."""
        deadline = time.monotonic() + timeout
        while not done(self.items):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not done after {timeout} s; received {self.items}")
            try:
                message = self.client.next_event(min(left, 1.0))
            except TimeoutError:
                continue
            except (EOFError, OSError):
                self.client.close()
                self.client = self._reconnect(deadline)
                continue
            if message.event == self.reset_event:
                self.items.append(RESET)
            else:
                self.items.append((message.id, message.data))
            if message.last_event_id:
                self.last_event_id = message.last_event_id
        return self.items

    def _reconnect(self, deadline: float) -> StreamClient:
        while True:
            try:
                return self._connect()
            except (OSError, EOFError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the server is restarting: a browser waits its retry time too

    def read_until_data(self, data: str, timeout: float = 20.0) -> list[Item]:
        """Read until an event with ``data`` arrived (send it with an id, so a reconnect replays it)."""
        return self.read_until(lambda items: any(isinstance(i, tuple) and i[1] == data for i in items), timeout)

    def close(self) -> None:
        self.client.close()


def after_last_reset(items: list[Item]) -> list[tuple[int | None, str]]:
    """The events received since the last reset event (all of them if none came)."""
    last = max((n for n, item in enumerate(items) if item == RESET), default=-1)
    return [item for item in items[last + 1 :] if isinstance(item, tuple)]


def assert_each_once_in_order(items: list[Item], expected: list[tuple[int | None, str]]) -> None:
    """Since the last reset: ids strictly increasing, and each of ``expected`` exactly once, in order."""
    events = after_last_reset(items)
    ids = [id for id, _ in events]
    assert all(a is not None and b is not None and a < b for a, b in zip(ids, ids[1:], strict=False)), items
    got = [event for event in events if event in expected]
    assert got == expected, f"expected {expected} once each, in order; received {items}"


def assert_ids_went_past(ids: list[int | None], highest_before: int) -> None:
    """Ids given after Redis lost data: above every id given before it, then one by one."""
    assert all(id is not None for id in ids), ids
    first = ids[0]
    assert first is not None and first > highest_before, (ids, highest_before)
    assert ids == list(range(first, first + len(ids))), ids
