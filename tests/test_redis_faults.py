"""The Redis backend when Redis fails (SPEC 3, 6): a real redis-server, stopped and restarted.

Each test has its own redis-server on its own port, killed (SIGKILL) and
started again on the same port. Two kinds: ``RedisServer`` keeps nothing
across a restart (the store and the id counter are gone, as with a Redis
without persistence), ``PersistentRedis`` keeps everything (append-only file).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE
from tests.support.redis_server import RedisServer
from tests.support.resuming import RESET, ResumingClient, assert_each_once_in_order, assert_ids_went_past
from tests.support.streams import until_end
from tests.support.waiting import wait_until

KEEPALIVE = 0.2
#: The pub/sub channel of the default SSE_REDIS_PREFIX.
#: The control channel of the default SSE_REDIS_PREFIX: every process subscribes to it.
EVENTS = "{sse}:control"


def start_persistent_redis(directory) -> RedisServer:
    """A redis-server whose data survives a SIGKILL.

    With ``--appendonly yes`` Redis writes every write command to its
    append-only file before it answers the command (``--appendfsync always``
    also fsyncs it before answering), so what a client was told is done is in
    the file, and the restarted server (same ``--dir``, same port) loads it
    back. RDB snapshots are off: the append-only file is the only copy.
    """
    return RedisServer(directory, extra_args=["--appendonly", "yes", "--appendfsync", "always"])


@pytest.fixture
def plain_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def persistent_redis(tmp_path) -> Iterator[RedisServer]:
    server = start_persistent_redis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def new_app(make_app) -> Iterator[Callable[..., tuple[Flask, SSE]]]:
    """``new_app(server)``: an app on that Redis (keep-alive every 0.2 s); closed after the test."""
    made: list[tuple[Flask, SSE]] = []

    def make(server: RedisServer, **config: Any) -> tuple[Flask, SSE]:
        app, sse = make_app(**{"SSE_REDIS_URL": server.url, "SSE_KEEPALIVE": KEEPALIVE, **config})
        made.append((app, sse))
        return app, sse

    yield make
    for _app, sse in made:
        sse.close()


def subscribers(server: RedisServer) -> int:
    """How many connections are subscribed to the events of the default prefix."""
    with server.client() as client:
        return int(client.pubsub_numsub(EVENTS)[0][1])


def wait_resubscribed(server: RedisServer, count: int = 1) -> None:
    wait_until(lambda: subscribers(server) == count, 10, f"{count} subscription(s) to {EVENTS} (resubscribed)")


def keepalives(client, count: int, timeout: float = 5.0) -> None:
    """Read until ``count`` more keep-alive comments came; the stream must stay open meanwhile."""
    target = len(client.comments) + count
    deadline = time.monotonic() + timeout
    while len(client.comments) < target:
        chunk = client.next_chunk(max(deadline - time.monotonic(), 0.001))
        assert chunk is not None, "the stream ended"


def send(sse: SSE, count: int, label: str, channel: str = "sse") -> list[tuple[int | None, str]]:
    """Send ``count`` id'd events; return their ``(id, data)``, the data being ``<label><n>``."""
    sent = []
    for n in range(1, count + 1):
        data = f"{label}{n}"
        sent.append((sse.send_new_event(data=data, id=True, channel=channel), data))
    return sent


def pairs(messages) -> list[tuple[int | None, str]]:
    return [(m.id, m.data) for m in messages]


def connect(client_for, port: int, how: str, sse: SSE, channel: str = "sse") -> tuple[Any, list]:
    """A stream that gets 3 stored events ``live`` (it opened first) or ``replayed`` (it opened after)."""
    path = f"/stream?channel={channel}"
    client = client_for(port, path) if how == "live" else None
    sent = send(sse, 3, "before", channel)
    if client is None:
        client = client_for(port, path)
    assert pairs(client.events(3, timeout=5)) == sent
    return client, sent


# -- Redis down -------------------------------------------------------------------------


def test_while_redis_is_down_streams_stay_open_and_calls_fail_fast(plain_redis, new_app, serve, client_for):
    app, sse = new_app(plain_redis)
    server = serve(app)
    client = client_for(server.port)
    sse.send_new_event(data="before", id=True)
    assert client.next_event(5).data == "before"

    plain_redis.stop()

    keepalives(client, 3)
    url = re.escape(plain_redis.url)
    for kwargs in ({"id": True}, {"id": False}):
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=url):
            sse.send_new_event(data="while down", **kwargs)
        assert time.monotonic() - started < 3
    with pytest.raises(ConnectionError, match=url):
        sse.history()
    with pytest.raises(ConnectionError, match=url):
        sse.messages  # noqa: B018 - a property that reads the store
    keepalives(client, 2)


def test_new_stream_while_redis_is_down_opens_and_ends_at_once(plain_redis, new_app, serve, client_for):
    # A browser gives up for good on any status but 200; a 200 that ends makes it retry later.
    app, sse = new_app(plain_redis)
    server = serve(app)
    open_stream = client_for(server.port)
    keepalives(open_stream, 1)
    plain_redis.stop()

    started = time.monotonic()
    client = client_for(server.port, "/stream", {"Last-Event-ID": "1"})
    client.wait_closed(timeout=5)
    elapsed = time.monotonic() - started

    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert client.headers["cache-control"] == "no-cache"
    assert client.pending_events() == []
    assert elapsed < 3
    keepalives(open_stream, 2)


def test_first_stream_of_a_process_while_redis_is_down_opens_and_ends_at_once(plain_redis, new_app, serve, client_for):
    plain_redis.stop()
    app, sse = new_app(plain_redis)
    server = serve(app)

    started = time.monotonic()
    client = client_for(server.port, timeout=20)
    client.wait_closed(timeout=20)
    elapsed = time.monotonic() - started

    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert elapsed < 3, f"the stream answered and ended after {elapsed:.1f} s"


def test_stream_opened_before_the_first_subscription_gets_the_events_sent_meanwhile(
    plain_redis, new_app, serve, client_for
):
    # The process's first stream came while Redis was down: its subscriber
    # has never subscribed and is still retrying when Redis is back.
    plain_redis.stop()
    app, sse = new_app(plain_redis)
    server = serve(app)
    client_for(server.port, timeout=20).wait_closed(timeout=20)
    plain_redis.start()

    client = client_for(server.port)
    sent = send(sse, 3, "e")

    assert pairs(until_end(client, sse)) == sent


# -- Redis restarted ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["live", "replayed"])
def test_after_a_restart_without_persistence_ids_go_on_and_open_streams_resume_with_a_reset(
    plain_redis, new_app, serve, client_for, how
):
    app, sse = new_app(plain_redis)
    server = serve(app)
    _, before = connect(client_for, server.port, how, sse)
    browser = ResumingClient(server.port, "/stream", last_event_id=str(before[-1][0]))  # has what `connect` got

    plain_redis.stop()
    plain_redis.start()
    wait_resubscribed(plain_redis)  # by itself: nothing here asks it to
    after = send(sse, 3, "after")
    end = send(sse, 1, "end")

    # The counter goes past every id given before: no id is given twice.
    assert_ids_went_past([id for id, _ in after + end], before[-1][0])
    # The store was lost: open streams get the reset event in-band, then each new event once.
    items = browser.read_until_data("end1")
    browser.close()
    assert RESET in items, items
    assert_each_once_in_order(items, after + end)
    assert [(id, event.data) for id, event in sse.history().items()] == after + end
    assert_ids_went_past([id for id, _ in before], 0)


def test_resume_above_the_last_id_of_a_restarted_redis_gets_reset_first(plain_redis, new_app, serve, client_for):
    app, sse = new_app(plain_redis)
    server = serve(app)
    send(sse, 5, "old")
    plain_redis.stop()
    plain_redis.start()
    after = send(sse, 2, "new")

    client = client_for(server.port, "/stream", {"Last-Event-ID": "5"})

    reset, *rest = until_end(client, sse)
    assert (reset.event, reset.data, reset.id) == ("sse-reset", "", None)
    assert pairs(rest) == after


def test_after_a_restart_with_persistence_ids_continue_and_replay_works(persistent_redis, new_app, serve, client_for):
    app, sse = new_app(persistent_redis)
    server = serve(app)
    client, before = connect(client_for, server.port, "live", sse)

    persistent_redis.stop()
    persistent_redis.start()
    wait_resubscribed(persistent_redis)
    after = send(sse, 2, "after")

    # A restarted Redis may have come back with less: the counter jumps past every id it may
    # have given (here it lost nothing, so no stream is told it missed something).
    assert_ids_went_past([id for id, _ in after], before[-1][0])
    assert pairs(until_end(client, sse)) == after
    assert [(id, event.data) for id, event in sse.history().items()] == before + after
    resumed = client_for(server.port, "/stream", {"Last-Event-ID": str(before[1][0])})
    assert pairs(until_end(resumed, sse)) == before[2:] + after


# -- catch-up after a lost subscription --------------------------------------------------------


def test_events_sent_while_a_worker_lost_its_subscription_reach_its_streams_once_in_order(
    persistent_redis, new_app, serve, client_for, caplog
):
    caplog.set_level(logging.WARNING, logger="flask_sse_stream.redis")
    # Two apps on one Redis and prefix, as two workers: A serves the stream, B sends.
    app_a, sse_a = new_app(persistent_redis)
    app_b, sse_b = new_app(persistent_redis)
    server_a, _ = serve(app_a), serve(app_b)
    client = client_for(server_a.port, "/stream?channel=room")
    keepalives(client, 1)
    wait_resubscribed(persistent_redis)
    expected: list[tuple[int | None, str]] = []

    # redis-py's PubSub reconnects and subscribes again by itself before it
    # raises the error, so A may be subscribed at any moment here; what
    # matters is that each event reaches A's client once, in order.
    for round in range(5):
        with persistent_redis.client() as admin:
            assert admin.client_kill_filter(_type="pubsub") == 1
        sent = send(sse_b, 4, f"kill{round}-", "room")
        expected += sent
        assert pairs(client.events(4, timeout=5)) == sent, f"round {round}"
        wait_resubscribed(persistent_redis)

    for attempt in range(3):
        persistent_redis.stop()
        keepalives(client, 5)  # meanwhile A's listener retries, waiting longer each time
        persistent_redis.start()
        sent = send(sse_b, 4, f"restart{attempt}-", "room")
        # Nobody is subscribed after the sends, so nobody was during them: only
        # A's catch-up from the store can bring these to its client.
        caught_up = subscribers(persistent_redis) == 0
        expected += sent
        assert pairs(client.events(4, timeout=10)) == sent, f"restart {attempt}"
        wait_resubscribed(persistent_redis)
        if caught_up:
            break

    assert caught_up, "A resubscribed before the sends every time: the catch-up was not exercised"
    assert pairs(until_end(client, sse_b, "room")) == []
    ids = [id for id, _ in expected]
    assert ids == sorted(set(ids)), ids  # each given once, increasing (they jump at each restart of Redis)
    resubscribed = [r for r in caplog.records if r.name == "flask_sse_stream.redis" and "resubscribed" in r.message]
    assert len(resubscribed) >= 6, [r.message for r in caplog.records]


@pytest.mark.parametrize("how", ["live", "replayed"])
def test_events_of_a_redis_that_lost_its_data_reach_the_streams_of_another_worker_once(
    plain_redis, new_app, serve, client_for, how
):
    app_a, sse_a = new_app(plain_redis)
    app_b, sse_b = new_app(plain_redis)
    server_a, _ = serve(app_a), serve(app_b)
    client, before = connect(client_for, server_a.port, how, sse_b)
    browser = ResumingClient(server_a.port, "/stream", last_event_id="3")

    plain_redis.stop()
    keepalives(client, 4)  # A's listener is disconnected and retrying
    plain_redis.start()
    again = send(sse_b, 5, "again")  # maybe before A has subscribed again
    end = send(sse_b, 1, "end")

    assert_ids_went_past([id for id, _ in again + end], 3)  # B had seen 1..3
    items = browser.read_until_data("end1")
    browser.close()
    assert_each_once_in_order(items, again + end)


def test_stream_resuming_while_its_worker_catches_up_gets_no_event_twice(persistent_redis, new_app, serve, client_for):
    # A browser got ids 1..3 from worker B and reconnects, with Last-Event-ID 3,
    # to worker A while A's subscription is down: A's catch-up must not send 1..3 again.
    app_a, sse_a = new_app(persistent_redis)
    app_b, sse_b = new_app(persistent_redis)
    server_a = serve(app_a)
    on_a = client_for(server_a.port, "/stream?channel=other")
    keepalives(on_a, 1)
    persistent_redis.stop()
    keepalives(on_a, 5)  # A's listener retries, waiting longer each time
    persistent_redis.start()
    got = send(sse_b, 3, "e")

    resumed = client_for(server_a.port, "/stream", {"Last-Event-ID": str(got[-1][0])})
    later = send(sse_b, 1, "later")

    assert pairs(resumed.events(1, timeout=5)) == later
    wait_resubscribed(persistent_redis)
    assert pairs(until_end(resumed, sse_b)) == []


def test_errors_and_logs_name_the_redis_url_without_its_password(tmp_path, new_app, serve, client_for, caplog):
    server = RedisServer(tmp_path, extra_args=["--requirepass", "s3cret-pw"])
    try:
        secret_url = server.url.replace("redis://", "redis://:s3cret-pw@")
        app, sse = new_app(server, SSE_REDIS_URL=secret_url)
        stream = client_for(serve(app).port)
        assert sse.send_new_event(data="works with the password", id=True)
        assert stream.next_event().data == "works with the password"

        server.stop()
        with pytest.raises(ConnectionError) as raised:
            sse.send_new_event(data="lost")
        wait_until(lambda: "lost the Redis subscription" in caplog.text, what="the listener to log the loss")
    finally:
        server.stop()
    assert f"redis://:***@127.0.0.1:{server.port}/0" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    assert "s3cret-pw" not in caplog.text
