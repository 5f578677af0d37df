"""``SSE.stats``: what the streams of an app did in this process, and what is logged."""

from __future__ import annotations

import logging

from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

COUNTERS = {
    "events_sent",
    "bytes_written",
    "streams_opened",
    "streams_refused",
    "replays_served",
    "events_replayed",
    "resets_sent",
    "slow_clients_dropped",
    "streams_ended",
    "streams_expired",
    "redis_reconnects",
    "store_reads",
}


def test_a_new_app_has_zero_everywhere(make_app) -> None:
    _, sse = make_app()
    refused = {"limit": 0, "client_limit": 0, "authorization": 0, "bad_request": 0}
    expected = {"streams": 0, "streams_by_channel": {}, "app_streams": 0, "app_streams_by_channel": {}}
    expected.update(dict.fromkeys(COUNTERS, 0))
    assert sse.stats == {**expected, "streams_refused_by_reason": refused}


def test_streams_are_counted_per_channel_while_open(make_app, serve, client_for) -> None:
    app, sse = make_app(SSE_KEEPALIVE=0.1)
    server = serve(app)
    a = client_for(server.port, "/stream?channel=a")
    client_for(server.port, "/stream?channel=a&channel=b")
    client_for(server.port, "/stream")
    stats = sse.stats
    assert stats["streams"] == 3
    assert stats["streams_by_channel"] == {"a": 2, "b": 1, "sse": 1}
    assert stats["streams_opened"] == 3

    a.close()
    wait_until(lambda: sse.stats["streams"] == 2, what="the closed stream to be noticed")
    assert sse.stats["streams_by_channel"] == {"a": 1, "b": 1, "sse": 1}
    assert sse.stats["streams_opened"] == 3  # a running total


def test_sent_replayed_and_reset_events_are_counted(make_app, serve, client_for) -> None:
    app, sse = make_app(SSE_MAX_HISTORY=2)
    server = serve(app)
    for n in range(4):
        sse.send_new_event(data=f"stored {n}", id=True)
    sse.send_new_event(data="live")
    assert sse.stats["events_sent"] == 5

    fresh = client_for(server.port)  # replays ids 3 and 4
    assert [m.id for m in fresh.events(2)] == [3, 4]
    behind = client_for(server.port, "/stream", {"Last-Event-ID": "1"})  # reset, then 3 and 4
    assert [m.event for m in behind.events(3)] == ["sse-reset", "message", "message"]
    client_for(server.port, "/stream", {"Last-Event-ID": "4"}).next_chunk()  # nothing to replay

    stats = sse.stats
    assert (stats["replays_served"], stats["events_replayed"], stats["resets_sent"]) == (2, 4, 1)


def test_bytes_written_counts_what_the_streams_received(make_app, serve, client_for) -> None:
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port)
    received = client.next_chunk()
    sse.send_new_event(data="x" * 1000)
    received += client.next_chunk()
    wait_until(lambda: sse.stats["bytes_written"] >= len(received), what="the counter to catch up")
    # Direct writes count their chunked-encoding framing too: a few bytes per write.
    assert len(received) <= sse.stats["bytes_written"] <= len(received) + 20


def test_refused_streams_are_counted_and_logged(make_app, serve, client_for, caplog) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS=1)
    server = serve(app)
    client_for(server.port)
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        assert client_for(server.port).status == 503
    assert sse.stats["streams_refused"] == 1
    assert sse.stats["streams_refused_by_reason"]["limit"] == 1
    assert "refused a stream" in caplog.text


def test_dropped_slow_clients_are_counted_and_logged(make_app, serve, client_for, caplog) -> None:
    app, sse = make_app(SSE_QUEUE_SIZE=4)
    server = serve(app)
    stuck = client_for(server.port, "/stream?channel=slow", recv_buffer=4096)
    stuck.next_chunk()
    with caplog.at_level(logging.INFO, logger="flask_sse_stream"):
        for n in range(2000):
            sse.send_new_event(data=f"{n} " + "z" * 8000, channel="slow")
            if sse.stats["slow_clients_dropped"]:
                break
        # Logged once its response has ended (by the stream's writer, not by the sender).
        wait_until(lambda: "more than 4 events behind" in caplog.text, what="the log line")
    assert sse.stats["slow_clients_dropped"] == 1
    assert "slow" in caplog.text


def test_redis_reconnects_are_counted(tmp_path, make_app, serve, client_for) -> None:
    redis_server = RedisServer(tmp_path)
    try:
        app, sse = make_app(SSE_REDIS_URL=redis_server.url)
        port = serve(app).port
        client = client_for(port)  # the first stream starts the subscription
        client.next_chunk()
        assert sse.stats["redis_reconnects"] == 0
        redis_server.stop()
        redis_server.start()  # empty: the stream is told in-band
        wait_until(lambda: sse.stats["redis_reconnects"] == 1, what="the subscription to be made again")
        assert client.next_event().event == "sse-reset"
        sse.send_new_event(data="after")
        assert client.next_event().data == "after"
    finally:
        redis_server.stop()
