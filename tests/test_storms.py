"""Reconnect storms: streams that open together, or soon after one another, share one read of the store.

With either backend, a crowd of streams asking for the same channels (every
client of a worker that stopped, coming back) costs one read of the store
while nothing new reaches those channels, and each stream still gets exactly
what the store holds when it opens.
"""

from __future__ import annotations

import re
import selectors
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

from flask_sse_stream.core import core_of
from tests.support.chunked import dechunk, read_to_the_end
from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.streams import until_end
from tests.support.waiting import wait_until


@pytest.fixture(params=["in-process", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "in-process":
        yield {}
        return
    server = RedisServer(tmp_path)
    yield {"SSE_REDIS_URL": server.url}
    server.stop()


def test_streams_opening_one_after_another_share_one_read_until_an_event_comes(
    config, make_app, serve, client_for
) -> None:
    app, sse = make_app(**config)
    # With Redis, the next event comes from another worker: this one learns of it on its subscription.
    other_app, elsewhere = make_app(**config) if config else (app, sse)
    port = serve(app).port
    ids = [sse.send_new_event(data=f"stored {n}", id=True, channel="news") for n in range(3)]
    expected = [(id, f"stored {n}") for n, id in enumerate(ids)]
    if config:  # a read is kept only once the subscription has caught up (its first marker came back)
        listener = core_of(app).backend.listener()  # type: ignore[attr-defined]
        listener.wait_subscribed()
        wait_until(lambda: listener.view(("news",)) is not None, what="the subscription's first catch-up")
    first = client_for(port, "/stream?channel=news")
    assert [(m.id, m.data) for m in first.events(3)] == expected
    reads = sse.stats["store_reads"]
    crowd = [client_for(port, "/stream?channel=news") for _ in range(20)]
    for client in crowd:
        assert [(m.id, m.data) for m in client.events(3)] == expected
    assert sse.stats["store_reads"] == reads  # the crowd took the first stream's read

    later = elsewhere.send_new_event(data="later", id=True, channel="news")
    for client in [first, *crowd]:  # the subscription has it by then: the kept read is stale
        assert (client.next_event().id, client.last_event_id) == (later, str(later))
    newcomer = client_for(port, "/stream?channel=news")
    assert [(m.id, m.data) for m in newcomer.events(4)] == [*expected, (later, "later")]
    assert sse.stats["store_reads"] == reads + 1
    for client in [first, *crowd, newcomer]:
        assert until_end(client, sse, "news") == []  # and nothing twice
    assert other_app.name  # the other app lives as long as the test


@pytest.mark.parametrize("spread", [5, 0.2, 0])
def test_a_stream_ended_for_a_planned_reason_tells_its_client_a_retry_drawn_in_the_spread(
    make_app, serve, spread
) -> None:
    app, sse = make_app(SSE_RECONNECT_SPREAD=spread)
    port = serve(app).port
    retries = []
    for _ in range(20):
        client = StreamClient(port, "/stream?channel=news")
        client.next_chunk()  # the opening
        sse.end_streams(channel="news")
        body, ended = dechunk(read_to_the_end(client.sock, client._raw))
        client.close()
        assert ended, body
        retries += [int(n) for n in re.findall(rb"(?m)^retry: (\d+)$", body)]
    if spread:
        assert len(retries) == 20 and all(0 <= retry <= spread * 1000 for retry in retries), retries
        assert len(set(retries)) > 10, f"not drawn at random: {retries}"
    else:
        assert retries == []


def test_the_clients_of_streams_ended_together_come_back_evenly_over_the_spread(make_app, serve) -> None:
    """50 streams ended at once: each client is told when to come back (the moment it saw the end + its
    retry); sorted, those moments step through the 5 s spread one every 100 ms, as independent draws do not
    (they stray by 0.6 s from that line, typically), and no retry is over the spread."""
    app, sse = make_app(SSE_RECONNECT_SPREAD=5)
    port = serve(app).port
    clients = [StreamClient(port, "/stream?channel=news") for _ in range(50)]
    for client in clients:
        client.next_chunk()  # the opening
        client.sock.setblocking(False)
    raw = {client.sock: client._raw for client in clients}
    back: list[float] = []
    with selectors.DefaultSelector() as selector:
        for sock in raw:
            selector.register(sock, selectors.EVENT_READ)
        sse.end_streams(channel="news")
        while len(back) < len(clients):
            ready = selector.select(timeout=10)
            assert ready, f"{len(back)} of 50 streams ended"
            for key, _ in ready:
                sock = key.fileobj
                part = sock.recv(65536)  # type: ignore[union-attr]
                raw[sock] += part  # type: ignore[index]
                if part:
                    continue
                selector.unregister(sock)
                body, ended = dechunk(raw[sock])  # type: ignore[index]
                retry = [int(n) for n in re.findall(rb"(?m)^retry: (\d+)$", body)]
                assert ended and len(retry) == 1 and 0 <= retry[0] <= 5000, body
                back.append(time.monotonic() + retry[0] / 1000)
    for client in clients:
        client.close()
    back.sort()
    stray = max(abs(moment - back[0] - 0.1 * k) for k, moment in enumerate(back))
    assert stray < 0.2, [round(moment - back[0], 2) for moment in back]


def test_work_that_arrives_while_many_streams_are_ended_is_not_queued_behind_all_of_them(make_app, serve) -> None:
    """300 streams ended by one ``end_streams`` on the server's own loop: a greenlet started just after
    (as the first clients coming back are) runs while most of them are still being told, not after the
    last; every stream still ends with its ``retry:``. Telling them all in one turn of the loop held the
    first clients back until the end, and let them in together (issue 24 (c))."""
    app, sse = make_app(SSE_RECONNECT_SPREAD=5)
    open_when_it_ran: list[int] = []

    @app.post("/end")
    def end() -> str:
        sse.end_streams(channel="news")
        gevent.spawn(lambda: open_when_it_ran.append(sse.count_streams(channel="news")))
        return "ended"

    port = serve(app).port
    clients = [StreamClient(port, "/stream?channel=news") for _ in range(300)]
    for client in clients:
        client.next_chunk()  # the opening
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/end", data=b"", timeout=10).read() == b"ended"
    for client in clients:
        body, ended = dechunk(read_to_the_end(client.sock, client._raw))
        client.close()
        assert ended and re.search(rb"(?m)^retry: \d+$", body), body
    assert open_when_it_ran and open_when_it_ran[0] >= 150, open_when_it_ran
