"""Slow and gone clients (SPEC 3): the queue limit, eviction, bounded memory, keep-alive, the store's limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.support.internals import streams_of
from tests.support.waiting import wait_until

END = "end-of-test"
PAYLOAD = "x" * 8000  # events of about 8 KB


def read_until_closed(client, timeout: float = 5.0) -> list:
    """Every event the client can still read, up to the end of the connection."""
    deadline = time.monotonic() + timeout
    messages = []
    while True:
        try:
            messages.append(client.next_event(max(deadline - time.monotonic(), 0.001)))
        except EOFError:
            return messages


def until_end(client, sse, channel: str = "sse", timeout: float = 5.0) -> list:
    """Every event before a live-only END event sent now."""
    sse.send_new_event(data=END, channel=channel)
    deadline = time.monotonic() + timeout
    messages = []
    while (message := client.next_event(max(deadline - time.monotonic(), 0.001))).data != END:
        messages.append(message)
    return messages


def in_hub(server, function: Callable[[], object]) -> object:
    """Run ``function`` in the server's hub thread, with no greenlet switch inside; return its result."""
    done = threading.Event()
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["result"] = function()
        except BaseException as error:
            outcome["error"] = error
        finally:
            done.set()

    server.call_in_hub(call)
    assert done.wait(5), "the server's hub did not run the callback"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("result")


# -- a client that stops reading --------------------------------------------------


def test_client_that_never_reads_is_disconnected_while_others_get_every_event(make_app, serve, client_for):
    queue_size = 8
    app, sse = make_app(SSE_QUEUE_SIZE=queue_size, SSE_MAX_HISTORY=10000, SSE_KEEPALIVE=30)
    server = serve(app)
    slow = client_for(server.port, recv_buffer=4096)  # reads the head, then never reads again
    [slow_connection] = streams_of(app)
    normal = client_for(server.port)
    assert len(sse.connections) == 2

    # The kernel buffers a few MB for the slow client before the server's writes block;
    # 2,000 events of 8 KB (16 MB) is far beyond that.
    limit, after_eviction = 2000, 20
    most_pending = 0
    slowest_send = 0.0
    sent = 0
    evicted_at = None
    while sent < limit and (evicted_at is None or sent < evicted_at + after_eviction):
        started = time.monotonic()
        number = sse.send_new_event(data=f"{sent + 1}:{PAYLOAD}", id=True)
        slowest_send = max(slowest_send, time.monotonic() - started)
        sent += 1
        assert number == sent
        # White-box check (SPEC 3, "memory stays bounded"): the events queued for the
        # slow client, read from its Stream, never exceed SSE_QUEUE_SIZE.
        most_pending = max(most_pending, len(slow_connection.pending))
        if evicted_at is None and slow_connection not in streams_of(app):
            evicted_at = sent
        message = normal.next_event(timeout=5)
        assert (message.id, message.data) == (sent, f"{sent}:{PAYLOAD}")

    assert most_pending <= queue_size
    assert slowest_send < 1.0, f"a send took {slowest_send:.2f} s: senders must not wait on a slow client"
    wait_until(lambda: slow_connection not in streams_of(app), what="the slow client to be disconnected")
    [remaining] = streams_of(app)
    assert remaining is not slow_connection

    # The slow client now reads: what the kernel had buffered, then the end of the connection.
    got = read_until_closed(slow, timeout=10)
    assert slow.eof
    ids = [message.id for message in got]
    assert ids == list(range(1, len(ids) + 1)), "the slow client got a gap instead of being cut"
    assert len(ids) < sent

    # The normal client is still connected and in step.
    assert until_end(normal, sse) == []


def test_disconnected_slow_client_recovers_missed_events_on_reconnect(make_app, serve, client_for):
    app, sse = make_app(SSE_QUEUE_SIZE=8, SSE_MAX_HISTORY=10000, SSE_KEEPALIVE=30)
    server = serve(app)
    slow = client_for(server.port, recv_buffer=4096)
    [slow_connection] = streams_of(app)

    sent = 0
    while slow_connection in streams_of(app) and sent < 2000:
        sent += 1
        sse.send_new_event(data=f"{sent}:{PAYLOAD}", id=True)
    assert slow_connection not in streams_of(app), "the slow client was never disconnected"
    for _ in range(5):
        sent += 1
        sse.send_new_event(data=f"{sent}:{PAYLOAD}", id=True)

    got = read_until_closed(slow, timeout=10)
    last = got[-1].id if got else 0
    # What the browser does by itself: reconnect with the last id it saw.
    again = client_for(server.port, "/stream", {"Last-Event-ID": str(last)})

    missed = until_end(again, sse, timeout=10)
    assert [message.id for message in missed] == list(range(last + 1, sent + 1))
    assert all(message.data == f"{message.id}:{PAYLOAD}" for message in missed)
    assert not any(message.event == "sse-reset" for message in missed)


@pytest.mark.parametrize("queue_size", [1, 8])
def test_burst_of_queue_size_events_is_delivered(make_app, serve, client_for, queue_size):
    app, sse = make_app(SSE_QUEUE_SIZE=queue_size, SSE_KEEPALIVE=30)
    server = serve(app)
    client = client_for(server.port)
    [connection] = sse.connections

    # All sent in one callback of the server's hub: the stream cannot write in between.
    in_hub(server, lambda: [sse.send_new_event(data=str(n), id=True) for n in range(1, queue_size + 1)])

    assert [message.data for message in client.events(queue_size, timeout=5)] == [
        str(n) for n in range(1, queue_size + 1)
    ]
    assert sse.connections == [connection]


@pytest.mark.parametrize("queue_size", [1, 8])
def test_client_more_than_queue_size_events_behind_is_disconnected(make_app, serve, client_for, queue_size):
    app, sse = make_app(SSE_QUEUE_SIZE=queue_size, SSE_KEEPALIVE=30)
    server = serve(app)
    client = client_for(server.port)
    client.next_chunk(timeout=2)  # the opening comment: the stream now waits for events
    [connection] = sse.connections
    client_for(server.port, "/stream?channel=other")

    burst = queue_size + 1
    in_hub(server, lambda: [sse.send_new_event(data=str(n), id=True) for n in range(1, burst + 1)])

    wait_until(lambda: connection not in sse.connections, what="the client to be disconnected")
    assert read_until_closed(client) == []
    assert client.eof
    # Other streams are untouched, and the missed events are there on reconnect.
    assert len(sse.connections) == 1 and sse.connections[0].channels == ("other",)
    again = client_for(server.port, "/stream?lastEventId=0")
    assert [message.data for message in until_end(again, sse)] == [str(n) for n in range(1, burst + 1)]


# -- a client that leaves -----------------------------------------------------------


def test_client_that_disconnects_is_removed_from_connections(make_app, serve, client_for):
    app, sse = make_app(SSE_KEEPALIVE=0.2)
    server = serve(app)
    leaving = client_for(server.port, "/stream?channel=a")
    staying = client_for(server.port, "/stream?channel=b")
    assert sorted(connection.channels for connection in sse.connections) == [("a",), ("b",)]

    leaving.close()

    wait_until(lambda: len(sse.connections) == 1, timeout=3, what="the closed stream to leave sse.connections")
    assert sse.connections[0].channels == ("b",)
    sse.send_new_event(data="still here", channel="b")
    assert staying.next_event(timeout=2).data == "still here"


def test_idle_client_stays_connected_across_keepalives(make_app, serve, client_for):
    app, sse = make_app(SSE_KEEPALIVE=0.2)
    server = serve(app)
    client = client_for(server.port)
    client.next_chunk(timeout=2)
    opening = len(client.comments)

    while len(client.comments) < opening + 3:
        chunk = client.next_chunk(timeout=2)
        assert chunk is not None and chunk.startswith(b":"), chunk

    assert len(sse.connections) == 1
    sse.send_new_event(data="after the silence", id=True)
    message = client.next_event(timeout=2)
    assert (message.id, message.data) == (1, "after the silence")


# -- the store's limits -------------------------------------------------------------


def test_max_history_keeps_the_last_ids_of_each_channel(make_app, serve, client_for):
    app, sse = make_app(SSE_MAX_HISTORY=3)
    server = serve(app)
    for number in range(1, 11):
        sse.send_new_event(data=f"a{number}", id=True, channel="a")
    sse.send_new_event(data="b11", id=True, channel="b")

    assert list(sse.history("a")) == [8, 9, 10]
    assert [event.data for event in sse.history("a").values()] == ["a8", "a9", "a10"]
    assert list(sse.history("b")) == [11]
    client = client_for(server.port, "/stream?channel=a&channel=b")
    assert [(m.id, m.data) for m in until_end(client, sse, channel="a")] == [
        (8, "a8"),
        (9, "a9"),
        (10, "a10"),
        (11, "b11"),
    ]


def test_history_ttl_expires_stored_events(make_app, serve, client_for):
    ttl = 0.3
    app, sse = make_app(SSE_HISTORY_TTL=ttl)
    server = serve(app)
    sent_at = time.monotonic()
    sse.send_new_event(data="old-1", id=True)
    sse.send_new_event(data="old-2", id=True)
    assert list(sse.history()) == [1, 2]

    wait_until(lambda: sse.history() == {}, what="the stored events to expire")

    assert time.monotonic() - sent_at >= ttl * 0.9
    sse.send_new_event(data="new", id=True)
    client = client_for(server.port)
    assert [(m.id, m.data) for m in until_end(client, sse)] == [(3, "new")]
