"""A stream's queue under senders and closers of other threads: nothing raises, nothing is stranded."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator

import pytest

from flask_sse_stream.event import new_event
from flask_sse_stream.stream import Stream

EVENT = new_event("x", None, None, json.dumps)


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Switch threads as often as CPython allows, so that races show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_a_close_from_another_thread_while_the_writer_drains_raises_nothing(tiny_switch_interval) -> None:
    errors: list[BaseException] = []
    for _ in range(300):
        stream = Stream(("sse",), None, queue_size=100_000)
        for _ in range(5000):
            stream.push(EVENT, 0)

        def take(stream: Stream = stream) -> None:
            try:
                while stream.take(0.01) is not None:
                    pass
            except BaseException as error:  # noqa: BLE001 - what the test looks for
                errors.append(error)

        writer = threading.Thread(target=take)
        writer.start()
        stream.close()
        writer.join(10)
        assert not writer.is_alive()
        assert not errors, errors[0]


def test_slow_streams_cut_by_a_sender_of_another_thread_end_and_the_server_serves_on(
    make_app, serve, client_for
) -> None:
    # The server's greenlets run in the server's thread; the sender is this
    # test's thread: cutting a slow stream must go through the server's loop.
    app, sse = make_app(SSE_QUEUE_SIZE=2, SSE_KEEPALIVE=60, SSE_MAX_HISTORY=0)
    port = serve(app).port
    slow = [client_for(port, "/stream?channel=slow", recv_buffer=4096) for _ in range(30)]
    reader = client_for(port, "/stream?channel=other")
    big = "z" * 200_000
    for _ in range(40):
        sse.send_new_event(data=big, channel="slow")
    for client in slow:
        client.sock.settimeout(10)
        while client.sock.recv(1 << 20):  # what the server wrote before it cut the stream
            pass
    sse.send_new_event(data="still serving", channel="other")
    assert reader.next_event(5).data == "still serving"
    assert sse.stats["slow_clients_dropped"] == 30


def with_id(number: int):
    return new_event(f"e{number}", None, None, json.dumps).with_id(number)


def written_ids(stream: Stream) -> list[int | None]:
    return [event.id for event in stream.drain()]


def test_a_copy_of_a_replayed_event_queued_after_a_live_one_is_written_once() -> None:
    # Checker seed 863795293 (redis): a replay up to id 7, a live event 9 written, then the
    # subscription's copy of 7 came late; it was written a second time.
    stream = Stream(("sse",), None, queue_size=100)
    stream.push(with_id(6), 0)  # subscribed before the read: copies of what the replay has
    stream.replayed(7)
    stream.push(with_id(7), 0)
    stream.push(with_id(9), 0)
    assert written_ids(stream) == [9]
    stream.push(with_id(7), 0)
    stream.push(with_id(10), 0)
    assert written_ids(stream) == [10]


def test_a_late_copy_of_a_replayed_event_is_not_written_ahead_of_an_in_band_reset() -> None:
    stream = Stream(("sse",), None, queue_size=100)
    stream.replayed(7)
    stream.push(with_id(9), 0)
    assert written_ids(stream) == [9]
    stream.push(with_id(7), 0)
    stream.push(with_id(11), 0)
    reset = new_event("reset", "sse-reset", None, json.dumps)
    stream.restart([reset, with_id(12)], 12)
    assert written_ids(stream) == [11, None, 12]
