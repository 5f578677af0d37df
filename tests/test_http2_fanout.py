"""Many streams multiplexed on one HTTP/2 connection, each bounded and fair.

- 100 streams on one connection (gunicorn's ``--http2-max-concurrent-streams``
  default) each receive every event, in order.
- One of them stops reading: its flow-control window fills, its events wait
  in its queue, and past ``SSE_QUEUE_SIZE`` it is cut (``RST_STREAM``) by the
  same slow-client rule as on HTTP/1.1, while the 99 others go on receiving,
  each within a second.
- Memory per open stream stays bounded: 1,000 idle streams on 10 connections
  cost the worker less than :data:`MAX_BYTES_PER_STREAM` each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support.h2 import H2Client, H2Server, H2Stream, wait_all
from tests.support.waiting import wait_until

QUEUE_SIZE = 8
#: The stalled stream's receive window: 16 events of 1 KiB fill it.
SMALL_WINDOW = 16 * 1024
#: The bound checked on the worker's RSS per idle stream (measured here: 16 KiB).
MAX_BYTES_PER_STREAM = 48 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Server]:
    running = H2Server(tmp_path_factory.mktemp("fanout"), True, {"SSE_QUEUE_SIZE": QUEUE_SIZE, "SSE_KEEPALIVE": 30})
    yield running
    running.stop()


def open_streams(connection: H2Client, path: str, count: int) -> list[H2Stream]:
    streams = [connection.open(path) for _ in range(count)]
    for stream in streams:
        stream.wait(lambda s: s.status == 200 and s.comments, 10, "open")
    return streams


def test_100_streams_on_one_connection_each_receive_every_event_in_order(server: H2Server) -> None:
    connection = H2Client(server.port, tls=True)
    try:
        streams = open_streams(connection, "/stream?channel=hundred", 100)
        sent = [f"burst {i}" for i in range(QUEUE_SIZE)] * 4
        for round_ in range(4):  # bursts of SSE_QUEUE_SIZE: each must be taken before the next
            server.post("/burst", n=str(QUEUE_SIZE), channel="hundred")
            wait_all(streams, QUEUE_SIZE * (round_ + 1))
        server.post("/publish", data="last", channel="hundred")
        wait_all(streams, 4 * QUEUE_SIZE + 1)
        for stream in streams:
            assert stream.data() == [*sent, "last"]
            assert stream.ended is None
    finally:
        connection.close()


def test_a_stream_that_stops_reading_is_cut_while_99_others_go_on(server: H2Server) -> None:
    connection = H2Client(server.port, tls=True, stream_window=SMALL_WINDOW)
    try:
        streams = open_streams(connection, "/stream?channel=stall", 100)
        stalled, others = streams[0], streams[1:]
        dropped = server.info()["stats"]["slow_clients_dropped"]
        stalled.stall()
        # 40 events of 1 KiB, in bursts smaller than the queue: 16 fill the stalled stream's window, 8 more
        # its queue. The others receive each burst within a second while it is stalled, before its cut.
        for round_ in range(8):
            started = time.monotonic()
            server.post("/burst", n="5", channel="stall", size="1024")
            wait_all(others, 5 * (round_ + 1), timeout=1.0)
            assert time.monotonic() - started < 1.0
        assert stalled.wait_ended(5).startswith("RST_STREAM")
        assert len(stalled.events) < 40
        assert all(stream.ended is None for stream in others)
        for n in range(3):
            started = time.monotonic()
            server.post("/publish", data=f"after {n}", channel="stall")
            wait_all(others, 41 + n, timeout=1.0)
            assert time.monotonic() - started < 1.0
        for stream in others:
            assert stream.data()[-3:] == ["after 0", "after 1", "after 2"]
        assert server.info()["stats"]["slow_clients_dropped"] == dropped + 1  # the stalled stream, alone
    finally:
        connection.close()


def test_memory_per_idle_stream_is_bounded(server: H2Server) -> None:
    worker = psutil.Process(server.worker())
    wait_until(lambda: server.info()["streams"] == 0, 5, "no stream open")
    # Warm up: the first streams allocate what every later one reuses.
    warm = H2Client(server.port, tls=True)
    open_streams(warm, "/stream?channel=memory", 100)
    warm.close()
    wait_until(lambda: server.info()["streams"] == 0, 5, "no stream open")
    before = worker.memory_info().rss
    connections = [H2Client(server.port, tls=True) for _ in range(10)]
    try:
        for connection in connections:
            open_streams(connection, "/stream?channel=memory", 100)
        assert server.info()["streams"] == 1000
        per_stream = (worker.memory_info().rss - before) / 1000
        assert per_stream < MAX_BYTES_PER_STREAM, f"{per_stream / 1024:.1f} KiB per idle stream"
    finally:
        for connection in connections:
            connection.close()
