"""Redis ids never go back, and no stream loses or repeats an event, when Redis loses data.

Redis can come back with less than it had: restarted without persistence,
restored from an older snapshot, or with the id key deleted or evicted. Every
process of the app remembers the highest id it has seen and moves the counter
past it, so an id is never given to two events; a stream that could have
missed something is told (the reset event) and given the store again.

Each test has its own redis-server; the app runs on gevent's WSGIServer in a
thread of the test process; the clients reconnect as browsers do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE
from tests.support.redis_server import RedisServer
from tests.support.resuming import (
    RESET,
    ResumingClient,
    assert_each_once_in_order,
    assert_ids_went_past,
)
from tests.support.waiting import wait_until

END = "end-of-test"


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def new_app(make_app) -> Iterator[Callable[..., tuple[Flask, SSE]]]:
    made: list[SSE] = []

    def make(server: RedisServer, **config: Any) -> tuple[Flask, SSE]:
        app, sse = make_app(SSE_REDIS_URL=server.url, SSE_KEEPALIVE=0.2, **config)
        made.append(sse)
        return app, sse

    yield make
    for sse in made:
        sse.close()


@pytest.fixture
def browsers() -> Iterator[Callable[..., ResumingClient]]:
    opened: list[ResumingClient] = []

    def open_(port: int, path: str = "/stream", last_event_id: str = "") -> ResumingClient:
        browser = ResumingClient(port, path, last_event_id)
        opened.append(browser)
        return browser

    yield open_
    for browser in opened:
        browser.close()


def send(sse: SSE, label: str, count: int, channel: str = "sse") -> list[tuple[int | None, str]]:
    """``count`` id'd events ``<label>1``...; each retried until Redis takes it (it may be coming back)."""
    sent = []
    for n in range(1, count + 1):
        data = f"{label}{n}"
        for _ in range(100):
            try:
                sent.append((sse.send_new_event(data=data, id=True, channel=channel), data))
                break
            except ConnectionError:
                wait_until(lambda: True, 0.05)
        else:
            raise AssertionError(f"Redis never took {data!r}")
    return sent


def test_ids_go_on_past_the_highest_seen_after_a_restore_from_an_older_snapshot(
    redis_server, new_app, serve, browsers
) -> None:
    app, sse = new_app(redis_server)
    browser = browsers(serve(app).port)
    before = send(sse, "old", 3)
    with redis_server.client() as client:
        client.save()  # the snapshot: ids 1-3
    before += send(sse, "old", 2)
    assert_ids_went_past([id for id, _ in before], 0)
    browser.read_until_data("old2")

    redis_server.stop()
    redis_server.start()  # from the snapshot: the counter says 3
    new = send(sse, "new", 3)
    end = send(sse, END, 1)

    assert_ids_went_past([id for id, _ in new + end], 5)
    items = browser.read_until_data(f"{END}1")
    assert_each_once_in_order(items, [*new, *end])


@pytest.mark.parametrize("sender", ["same process", "a process that saw nothing"])
def test_ids_go_on_past_the_highest_seen_after_the_id_key_is_deleted(
    redis_server, new_app, serve, browsers, sender: str
) -> None:
    app, sse = new_app(redis_server)
    browser = browsers(serve(app).port)
    before = send(sse, "old", 5)
    browser.read_until_data("old5")

    with redis_server.client() as client:
        client.delete("{sse}:id")  # as an allkeys-* maxmemory policy may evict it
    other_app, other_sse = new_app(redis_server)
    sender_sse = sse if sender == "same process" else other_sse
    new = send(sender_sse, "new", 3)
    end = send(sse, END, 1)

    given = [id for id, _ in before + new + end]
    assert len(set(given)) == len(given), f"an id given twice: {given}"
    items = browser.read_until_data(f"{END}1")
    assert_each_once_in_order(items, [*new, *end])


def test_a_client_resuming_after_redis_restarted_empty_gets_each_new_event_once(
    redis_server, new_app, serve, browsers
) -> None:
    app, sse = new_app(redis_server)
    port = serve(app).port
    browsers(port, "/stream?channel=other")  # this process's subscription is live
    send(sse, "old", 20)

    redis_server.stop()
    redis_server.start()  # empty
    new = send(sse, "new", 2)
    browser = browsers(port, "/stream", last_event_id="20")  # a browser reconnecting
    end = send(sse, END, 1)

    assert_ids_went_past([id for id, _ in new + end], 20)
    items = browser.read_until_data(f"{END}1")
    # Its replay brings the reset event; the process, catching up after Redis came back, may tell it
    # once more in-band (it cannot tell that this stream read the store after the loss): each new
    # event once after the last reset.
    assert items.count(RESET) <= 2, items
    assert_each_once_in_order(items, [*new, *end])


def test_a_worker_that_had_sent_nothing_when_redis_lost_its_data_gives_no_old_id(redis_server, new_app) -> None:
    busy_app, busy = new_app(redis_server)
    before = send(busy, "old", 5)
    quiet_app, quiet = new_app(redis_server)  # a worker that starts, and sends nothing for a while
    busy.close()  # the worker that sent the ids is gone

    redis_server.stop()
    redis_server.start()  # empty
    after = send(quiet, "new", 2)

    assert_ids_went_past([id for id, _ in after], before[-1][0] or 0)


def test_a_worker_that_started_before_any_id_was_given_and_saw_none_gives_no_old_id(redis_server, new_app) -> None:
    # It knew the counter's epoch, not its ids: finding no epoch, it knows Redis lost everything.
    quiet_app, quiet = new_app(redis_server)
    busy_app, busy = new_app(redis_server)
    before = send(busy, "old", 5)
    busy.close()

    redis_server.stop()
    redis_server.start()  # empty
    after = send(quiet, "new", 2)

    assert_ids_went_past([id for id, _ in after], before[-1][0] or 0)


@pytest.mark.parametrize("loss", ["restarted empty", "restored from an older snapshot"])
def test_a_worker_that_starts_after_redis_lost_data_gives_no_old_id(
    redis_server, new_app, serve, browsers, loss: str
) -> None:
    # The worker that gave the ids is gone (or has not reconnected yet): the
    # new one cannot learn them from it, and must not give them again.
    old_app, old = new_app(redis_server)
    before = send(old, "kept", 3)
    if loss == "restored from an older snapshot":
        with redis_server.client() as client:
            client.save()  # the snapshot: the first 3 ids
    before += send(old, "forgotten", 2)
    old.close()

    redis_server.stop()
    redis_server.start()
    new_app_, new = new_app(redis_server)  # a worker gunicorn starts meanwhile
    after = send(new, "new", 2)

    assert_ids_went_past([id for id, _ in after], before[-1][0] or 0)
    # A browser that had the old last id: told it missed something, then the store, each event once.
    browser = browsers(serve(new_app_).port, last_event_id=str(before[-1][0]))
    end = send(new, END, 1)
    items = browser.read_until_data(f"{END}1")
    assert items[0] == RESET, items
    kept = before[:3] if loss == "restored from an older snapshot" else []
    assert_each_once_in_order(items, [*kept, *after, *end])


def test_a_worker_that_saw_ids_a_restore_forgot_reports_them_when_it_reconnects(
    redis_server, new_app, serve, browsers
) -> None:
    old_app, old = new_app(redis_server)
    port = serve(old_app).port
    watching = browsers(port, "/stream")
    before = send(old, "kept", 3)
    with redis_server.client() as client:
        client.save()
    before += send(old, "forgotten", 2)
    watching.read_until_data("forgotten2")

    redis_server.stop()
    redis_server.start()  # from the snapshot: ids 4 and 5 are forgotten
    new_app_, new = new_app(redis_server)
    after = send(new, "new", 1)
    assert_ids_went_past([id for id, _ in after], before[-1][0] or 0)

    # Once the old worker is back (its open stream gets the next event), a browser that stopped at id 3
    # missed ids 4 and 5, which no store holds any more: it gets the reset event.
    end = send(new, END, 1)
    watching.read_until_data(f"{END}1")
    browser = browsers(port, last_event_id=str(before[2][0]))
    items = browser.read_until_data(f"{END}1")
    assert items[0] == RESET, items
    assert_each_once_in_order(items, [*before[:3], *after, *end])
