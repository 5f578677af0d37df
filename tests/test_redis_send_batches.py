"""Sends made at the same time share Redis round trips, and each still gets its own id, once, in order.

A send to Redis waits for its round trip; the sends that arrive meanwhile (the
request handlers of a gevent worker, the threads of ``flask run``) go
together in the next script call. What a stream receives, what is stored and
what each caller gets back must be as if they had been sent one by one.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import gevent
import pytest

from tests.support.redis_server import RedisServer

CHANNELS = ("a", "b", "c")


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def script_calls(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def order(item: tuple[int | None, str, str]) -> tuple[bool, int, str, str]:
    id, channel, data = item
    return id is None, id or 0, channel, data


def check_what_streams_and_the_store_got(sse, client, sent: list[tuple[int | None, str, str]], max_history: int):
    """Every send once, in id order, on the stream of every channel; the store holds the last of each channel."""
    stored = sorted((id, channel, data) for id, channel, data in sent if id is not None)
    ids = [id for id, _, _ in stored]
    assert len(set(ids)) == len(ids), f"an id was given twice: {ids}"
    received = client.events(len(sent), timeout=10)
    got = [(message.id, message.event, message.data) for message in received]
    assert sorted(got, key=order) == sorted(sent, key=order)
    id_order = [id for id, _, _ in got if id is not None]
    assert id_order == sorted(id_order), "the stream got ids out of order"
    for channel in CHANNELS:
        expected = [(id, data) for id, name, data in stored if name == channel][-max_history:]
        assert [(id, event.data) for id, event in sse.history(channel).items()] == expected, channel


@pytest.fixture
def opened(redis_server, make_app, serve, client_for):
    """``opened(max_history)``: an app on Redis, a stream of its three channels, and the script calls so far."""

    def open_(max_history: int):
        app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_MAX_HISTORY=max_history)
        client = client_for(serve(app).port, "/stream?channel=a&channel=b&channel=c")
        sse.send_new_event(data="warm-up", channel="elsewhere", id=True)  # the script is loaded
        return sse, client, script_calls(redis_server)

    return open_


def test_greenlets_that_send_at_once_share_round_trips_and_each_get_their_own_id(redis_server, opened) -> None:
    sse, client, before = opened(7)
    rng = random.Random()
    sent: list[tuple[int | None, str, str]] = []

    def send(n: int) -> None:
        channel, stored = rng.choice(CHANNELS), rng.random() < 0.8
        id = sse.send_new_event(data=f"n{n}", event=channel, channel=channel, id=stored)
        sent.append((id, channel, f"n{n}"))

    gevent.joinall([gevent.spawn(send, n) for n in range(200)], timeout=20, raise_error=True)
    calls = script_calls(redis_server) - before
    assert len(sent) == 200
    assert calls < 100, f"200 sends at once took {calls} script calls"
    check_what_streams_and_the_store_got(sse, client, sent, 7)


def test_threads_that_send_at_once_share_round_trips_and_each_get_their_own_id(redis_server, opened) -> None:
    """``flask run`` without gevent: request handlers are OS threads."""
    sse, client, before = opened(5)
    sent: list[tuple[int | None, str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send(thread: int) -> None:
        start.wait(5)
        for n in range(25):
            channel = CHANNELS[(thread + n) % 3]
            id = sse.send_new_event(data=f"t{thread}-{n}", event=channel, channel=channel, id=n % 4 != 0)
            with lock:
                sent.append((id, channel, f"t{thread}-{n}"))

    threads = [threading.Thread(target=send, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    calls = script_calls(redis_server) - before
    assert len(sent) == 200
    assert calls < 200, "no two of 200 sends from 8 threads shared a script call"
    check_what_streams_and_the_store_got(sse, client, sent, 5)
