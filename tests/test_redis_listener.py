"""The one Redis subscription of a process: it never stays dead, and its catch-up misses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE, Admission
from flask_sse_stream.access import Ending
from flask_sse_stream.backends import redis_listener
from flask_sse_stream.core import core_of
from tests.support.internals import streams_of
from tests.support.redis_proxy import RedisProxy
from tests.support.redis_server import RedisServer, ids_from_one
from tests.support.streams import until_end
from tests.support.waiting import wait_until


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    ids_from_one(server.url)  # these tests follow ids one by one: small ones read best
    yield server
    server.stop()


class Crash(BaseException):
    """Not an Exception: what a kill, a timeout or an interrupt raises in the listener."""


def test_a_listener_killed_by_a_base_exception_is_started_again(
    redis_server, make_app, serve, client_for, monkeypatch
) -> None:
    app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_KEEPALIVE=0.2)
    try:
        port = serve(app).port
        first = client_for(port)
        original = redis_listener.Listener._on_message
        crashes = []

        def crash_once(self, *args):
            if not crashes:
                crashes.append(1)
                raise Crash
            return original(self, *args)

        monkeypatch.setattr(redis_listener.Listener, "_on_message", crash_once)
        assert sse.send_new_event(data="kills the listener", id=True) == 1

        second = client_for(port)  # a stream that opens now needs a live subscription
        assert sse.send_new_event(data="after", id=True) == 2
        # (Id'd events: a live-only one sent while it subscribes again is lost, as documented.)
        assert sse.send_new_event(data="end", id=True) == 3
        expected = [(1, "kills the listener"), (2, "after"), (3, "end")]
        assert [(m.id, m.data) for m in second.events(3)] == expected
        assert [(m.id, m.data) for m in first.events(3)] == expected
        assert until_end(first, sse) == [] and until_end(second, sse) == []  # and nothing twice
    finally:
        sse.close()


@pytest.fixture
def proxied(redis_server: RedisServer, make_app) -> Iterator[Callable[..., tuple[RedisProxy, Flask, SSE, SSE]]]:
    """``proxied(**config)``: a proxy, an app whose Redis connections go through it, and another app (another
    worker, sending) straight on Redis; all closed after the test (ask for it after ``serve`` and ``client_for``,
    so that it is closed before them)."""
    made: list[tuple[RedisProxy, SSE, SSE, Flask]] = []

    def make(**config: Any) -> tuple[RedisProxy, Flask, SSE, SSE]:
        proxy = RedisProxy(redis_server.port)
        app, sse = make_app(SSE_REDIS_URL=proxy.url, SSE_KEEPALIVE=0.2, **config)
        other_app, elsewhere = make_app(SSE_REDIS_URL=redis_server.url, **config)
        made.append((proxy, sse, elsewhere, other_app))  # an SSE lives as long as its app
        return proxy, app, sse, elsewhere

    yield make
    for proxy, sse, elsewhere, _ in made:
        proxy.release()
        sse.close()
        elsewhere.close()
        proxy.close()


def kill_the_subscription(redis_server: RedisServer, proxy: RedisProxy) -> None:
    """Cut the app's subscription; return once its new one reached the proxy's armed point."""
    with redis_server.client() as direct:
        direct.client_kill_filter(_type="pubsub")
    assert proxy.holding.wait(10), "no new subscription after the old one was killed"


def test_the_catch_up_after_a_lost_subscription_reads_every_store_at_one_moment(
    redis_server, serve, client_for, proxied
) -> None:
    proxy, app, sse, elsewhere = proxied()
    client = client_for(serve(app).port, "/stream?channel=a&channel=b")
    assert [sse.send_new_event(data=c, id=True, channel=c) for c in "ab"] == [1, 2]
    assert [m.id for m in client.events(2)] == [1, 2]

    # The subscription is lost; the catch-up reads store a, and then,
    # before it reads anything more, events go to both channels.
    proxy.hold_after(b"{sse}:store:a")
    kill_the_subscription(redis_server, proxy)
    sent = [elsewhere.send_new_event(data=f"while catching up {c}", id=True, channel=c) for c in "ab"]
    proxy.release()

    assert sent == [3, 4]
    got = [(m.id, m.data) for m in until_end(client, sse, "a")]
    assert got == [(3, "while catching up a"), (4, "while catching up b")]


@pytest.mark.parametrize(("max_history", "with_id"), [(0, True), (0, False)], ids=["unstored", "both-unstored"])
def test_streams_that_missed_what_the_store_cannot_bring_back_end_so_their_clients_resume(
    redis_server, serve, client_for, proxied, max_history: int, with_id: bool
) -> None:
    # While the subscription is down, events go out that no catch-up can bring
    # (SSE_MAX_HISTORY = 0), and without a store no reset event is sent: a
    # stream that missed them must not carry on as if it had not: it ends.
    proxy, app, sse, elsewhere = proxied(SSE_MAX_HISTORY=max_history)
    port = serve(app).port
    client = client_for(port)
    assert sse.send_new_event(data="before", id=True) == 1
    assert client.next_event().data == "before"

    proxy.hold_before(b"SUBSCRIBE")
    kill_the_subscription(redis_server, proxy)
    elsewhere.send_new_event(data="while nobody listened", id=with_id)
    proxy.release()

    client.wait_closed(10)  # the stream ends: its client resumes
    again = client_for(port, "/stream", {"Last-Event-ID": "1"})
    assert elsewhere.send_new_event(data="after", id=True) == (3 if with_id else 2)
    assert [m.data for m in until_end(again, sse)] == ["after"]


def test_a_stream_that_missed_a_live_only_event_is_told_in_band_and_stays_open(
    redis_server, serve, client_for, proxied
) -> None:
    # A live-only event sent while the subscription was down is lost to the
    # stream; with a store, it is told so on its own connection: the reset
    # event, the store of its channels, then live events. Its client does not
    # reconnect (a reconnect storm when every stream of the app misses one).
    proxy, app, sse, elsewhere = proxied()
    port = serve(app).port
    client = client_for(port)
    assert sse.send_new_event(data="before", id=True) == 1
    assert client.next_event().data == "before"

    proxy.hold_before(b"SUBSCRIBE")
    kill_the_subscription(redis_server, proxy)
    elsewhere.send_new_event(data="while nobody listened")
    assert elsewhere.send_new_event(data="stored while down", id=True) == 2
    proxy.release()

    got = [(m.event, m.id, m.data) for m in client.events(3)]
    assert got == [("sse-reset", None, ""), ("message", 1, "before"), ("message", 2, "stored while down")]
    assert [m.data for m in until_end(client, sse)] == []  # open, and nothing twice
    assert sse.stats["resets_sent"] == 1


def test_streams_that_missed_nothing_while_the_subscription_was_down_stay_open(
    redis_server, serve, client_for, proxied
) -> None:
    proxy, app, sse, elsewhere = proxied()
    client = client_for(serve(app).port)
    proxy.hold_before(b"SUBSCRIBE")
    kill_the_subscription(redis_server, proxy)
    sent = [elsewhere.send_new_event(data=f"stored {n}", id=True) for n in range(3)]
    proxy.release()
    # The END that until_end sends is live-only: sent before the new
    # subscription is made, the stream would rightly end for missing it.
    wait_until(lambda: sse.stats["redis_reconnects"] == 1, what="the subscription to be made again")
    assert [(m.id, m.data) for m in until_end(client, sse)] == [(id, f"stored {n}") for n, id in enumerate(sent)]


def test_a_stream_that_opens_while_the_subscription_is_down_hides_no_gap_of_the_streams_before_it(
    redis_server, serve, client_for, proxied
) -> None:
    # SSE_MAX_HISTORY = 0: nothing to catch up from. A stream opened before the
    # loss missed what was sent while the subscription was down, whatever the
    # streams that open meanwhile read: it must end, so its client resumes.
    proxy, app, sse, elsewhere = proxied(SSE_MAX_HISTORY=0)
    port = serve(app).port
    before = client_for(port)
    elsewhere.send_new_event(data="before", id=True)
    assert before.next_event().data == "before"

    proxy.hold_before(b"SUBSCRIBE")
    kill_the_subscription(redis_server, proxy)
    elsewhere.send_new_event(data="while nobody listened", id=True)
    meanwhile = client_for(port)  # reads the channel's sequence after that event
    assert meanwhile.status == 200
    proxy.release()

    before.wait_closed(10)  # it missed an event: it ends, and its client resumes


def test_a_subscription_that_receives_nothing_after_subscribing_is_made_again(
    redis_server, serve, client_for, proxied
) -> None:
    # Up and confirmed, yet nothing more arrives, not even the marker of its
    # own catch-up: on a Redis Cluster, a subscription made on a node that has
    # just become a replica does that. It must not stay so for good.
    proxy, app, sse, elsewhere = proxied()
    client = client_for(serve(app).port)
    elsewhere.send_new_event(data="before", id=True)
    assert client.next_event().data == "before"

    proxy.hold_replies_after(b"subscribe")
    kill_the_subscription(redis_server, proxy)
    wait_until(lambda: sse.stats["redis_reconnects"] == 1, what="the catch-up after subscribing again")
    elsewhere.send_new_event(data="after", id=True)  # only the subscription can bring it now

    # Subscribed again on a connection that works, it catches the stream up (or ends it).
    got = [message.data for message in client.events(1, timeout=20)]
    assert got == ["after"], got


def authorized_after_an_ending(redis_server, make_app, serve, client_for) -> tuple[Flask, SSE, tuple[Flask, SSE], Any]:
    """A worker's stream of subject alice, authorized after an ending of alice sent by another worker
    (which ended the worker's first stream): the app, its SSE, the other worker (app, SSE), the stream."""
    app, sse = make_app(SSE_REDIS_URL=redis_server.url)
    other_app, elsewhere = make_app(SSE_REDIS_URL=redis_server.url)

    @sse.authorize
    def admit(channel: str) -> object:
        return Admission(subject="alice")

    port = serve(app).port
    first = client_for(port)
    assert first.status == 200
    elsewhere.end_streams(subject="alice")
    first.wait_closed(10)
    again = client_for(port)
    assert again.status == 200
    return app, sse, (other_app, elsewhere), again


def test_an_ending_that_comes_twice_ends_only_the_streams_open_when_it_first_came(
    redis_server, make_app, serve, client_for
) -> None:
    # A subscription that comes back reads the endings it missed, and may receive
    # the same ending on the subscription too: a stream authorized in between
    # (the client came back at once) must not end for it a second time.
    app, sse, (other_app, elsewhere), again = authorized_after_an_ending(redis_server, make_app, serve, client_for)
    with redis_server.client() as direct:
        (stored,) = direct.lrange("{sse}:endings", 0, -1)
    core_of(app).backend.endings.on_message(stored)  # what the catch-up of a subscription that came back reads
    sse.send_new_event(data="still open", id=True)
    assert again.next_event().data == "still open"
    elsewhere.close()


def test_endings_restored_from_an_older_snapshot_do_not_end_streams_authorized_after_them(
    redis_server, serve, client_for, make_app
) -> None:
    # Redis came back from a snapshot taken between two endings: its count of
    # endings is below what this worker has seen, so its catch-up reads every
    # ending Redis holds. Those it had acted on already must not end the
    # streams authorized since (since data loss ends no stream, this was the
    # one way a restore still ended them: the checker, seed 657326773).
    app, sse, (other_app, elsewhere), again = authorized_after_an_ending(redis_server, make_app, serve, client_for)
    elsewhere.end_streams(subject="bob")
    wait_until(lambda: core_of(app).backend.endings.seen == 2, what="the second ending to reach the worker")
    with redis_server.client() as direct:
        # As a snapshot taken between the two endings holds them.
        direct.set("{sse}:ending", 1)
        direct.lpop("{sse}:endings")
        direct.client_kill_filter(_type="pubsub")
    wait_until(lambda: sse.stats["redis_reconnects"] == 1, what="the subscription to be made again")
    assert [m.data for m in until_end(again, sse)] == []  # still open
    elsewhere.close()


def test_an_ending_made_after_redis_came_back_empty_ends_its_streams_when_its_count_matches_the_old_one(
    redis_server, make_app, serve, client_for
) -> None:
    # Checker seed 467870454: Redis restarted empty, and the first ending made
    # there got the count this worker had seen before (1); its catch-up took the
    # equal count for "nothing new", and a stream of that channel stayed open.
    app, sse = make_app(SSE_REDIS_URL=redis_server.url)
    other_app, elsewhere = make_app(SSE_REDIS_URL=redis_server.url)

    @sse.authorize
    def admit(channel: str) -> object:
        return Admission(subject="alice")

    stream = client_for(serve(app).port)
    assert stream.status == 200
    elsewhere.end_streams(subject="bob")
    wait_until(lambda: core_of(app).backend.endings.seen == 1, what="the first ending to reach the worker")
    with redis_server.client() as direct:
        # As Redis that came back empty, then took an ending of alice while this worker was away.
        direct.delete("{sse}:ending", "{sse}:endings")
        seconds, micros = direct.time()
        made = f"{direct.incr('{sse}:ending')} elsewhere@{seconds * 1000 + micros // 1000} "
        direct.lpush("{sse}:endings", made.encode() + Ending(subject="alice").encode())
        direct.client_kill_filter(_type="pubsub")
    stream.wait_closed(10)
    elsewhere.close()


def test_a_first_subscription_dates_each_ending_no_earlier_than_it_was_made(redis_server, make_app) -> None:
    # A worker subscribing for the first time takes the endings of the last
    # minute, each dated from Redis's clock (milliseconds): rounded against the
    # ending, a stream whose authorization began a fraction of a millisecond
    # before the ending was made would open anyway (test_access's cold-worker
    # test failed so, about one run in ten on a loaded machine).
    app, sse = make_app(SSE_REDIS_URL=redis_server.url)
    other_app, elsewhere = make_app(SSE_REDIS_URL=redis_server.url)
    core = core_of(app)
    for n in range(200):
        before = time.monotonic()  # a stream's authorization begins
        elsewhere.end_streams(subject=f"user-{n}")
        core.backend.endings.seen = -1  # as in a worker that has never subscribed
        core.backend.endings.catch_up()
        (arrived,) = [at for at, ending in core.fanout._endings if ending.subject == f"user-{n}"]
        assert arrived >= before, f"ending {n} dated {(before - arrived) * 1000:.3f} ms before it was made"
    elsewhere.close()


def test_a_live_only_event_sent_while_the_subscription_came_back_keeps_its_place_before_later_events(
    redis_server, serve, client_for, proxied
) -> None:
    # Subscribed again, the listener reads the store to catch its streams up.
    # Events sent before that read come both in the read (the id'd ones) and
    # on the new subscription: each must reach the stream once, in the order
    # sent, the live-only one too.
    proxy, app, sse, elsewhere = proxied()
    client = client_for(serve(app).port)
    assert sse.send_new_event(data="before", id=True) == 1
    assert client.next_event().data == "before"

    proxy.hold_before(b"{sse}:store:sse")  # the catch-up's read
    kill_the_subscription(redis_server, proxy)
    elsewhere.send_new_event(data="live, first")
    elsewhere.send_new_event(data="stored, second", id=True)
    elsewhere.send_new_event(data="live, third")
    proxy.release()

    got = [(m.id, m.data) for m in until_end(client, sse)]
    assert got == [(None, "live, first"), (2, "stored, second"), (None, "live, third")]


def test_a_live_only_event_received_while_a_new_channel_reads_its_store_is_not_taken_for_missed(
    redis_server, serve, client_for, proxied
) -> None:
    # The first stream of a channel here reads the store; before its answer
    # arrives, the subscription receives a live-only event of the channel (and
    # queues it for the stream). The sequence the read brings is then older than
    # what the subscription has: a resubscribe must not take that event for one
    # the stream missed and end it.
    proxy, app, sse, elsewhere = proxied()
    port = serve(app).port
    assert client_for(port, "/stream?channel=other").status == 200  # the subscription is up
    elsewhere.send_new_event(data="stored first", id=True, channel="n")
    proxy.hold_reply(b"stored first")  # the stream's read of the store has run; its answer waits
    opening: list[Any] = []
    thread = threading.Thread(target=lambda: opening.append(client_for(port, "/stream?channel=n")))
    thread.start()
    assert proxy.holding.wait(10)
    elsewhere.send_new_event(data="live, while it read", channel="n")
    wait_until(lambda: any(stream.pending for stream in streams_of(app)), what="the live event queued for the stream")
    proxy.release()
    thread.join(10)
    (client,) = opening
    assert [m.data for m in client.events(2)] == ["stored first", "live, while it read"]

    with redis_server.client() as direct:
        direct.client_kill_filter(_type="pubsub")
    wait_until(lambda: sse.stats["redis_reconnects"] == 1, what="the subscription to be made again")
    assert [m.data for m in until_end(client, sse, "n")] == []  # still open, nothing missed


def test_a_stream_that_opens_while_the_listener_recovers_from_a_data_loss_misses_nothing(
    redis_server, serve, client_for, proxied
) -> None:
    # Redis lost data: the listener reads the store, then tells every open
    # stream in-band (the reset event, that store). A stream that opened in
    # between, on a read of its own, is told too: after that reset its client
    # must still get every event (the checker found one told an older store
    # that lost what came in between, seed 2016718608).
    proxy, app, sse, elsewhere = proxied()
    port = serve(app).port
    before = client_for(port)
    assert sse.send_new_event(data="before", id=True) == 1
    assert before.next_event().data == "before"

    proxy.hold_before(b"{sse}:endings")  # the listener has read the store; it reads the endings next
    with redis_server.client() as direct:
        direct.flushall()
        direct.client_kill_filter(_type="pubsub")
    assert proxy.holding.wait(10), "no recovery after the subscription was killed"
    elsewhere.send_new_event(data="after the listener read", id=True)
    meanwhile = client_for(port)
    assert [m.data for m in meanwhile.events(1)] == ["after the listener read"]
    proxy.release()

    wait_until(lambda: sse.stats["resets_sent"] >= 1, what="the open stream to be told in-band")
    got = [(m.event, m.data) for m in before.events(2)]
    assert got == [("sse-reset", ""), ("message", "after the listener read")]
    elsewhere.send_new_event(data="later", id=True)
    after = [(m.event, m.data) for m in until_end(meanwhile, sse)]
    if after and after[0][0] == "sse-reset":  # told in-band: what follows is its whole view again
        after = after[1:]
        assert ("message", "after the listener read") in after
    assert after[-1:] == [("message", "later")]
