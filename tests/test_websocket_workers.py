"""gunicorn -k GeventWebSocketWorker -w 4 on a real Redis: WebSocket and SSE streams across workers (issue 22).

``tests/apps/access.py`` admits ``?user=<name>`` unless banned; ``POST /ban``
ends that user's streams in every worker. A WebSocket's 101 names no worker,
so a test finds the worker of a socket by its connections (psutil).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import Gunicorn, ended_within, open_streams
from tests.support.ws import Closed, WsClient, close_all, worker_serving

APP = "tests.apps.access:create_app()"
WORKER = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
BOUND = 400
_names = itertools.count()


def name(what: str) -> str:
    return f"{what}{next(_names)}"


@pytest.fixture(autouse=True)
def close_sockets() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Gunicorn]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {"SSE_COUNT_INTERVAL": "0.2", "SSE_KEEPALIVE": "0.5", "SSE_RETRY": "200"}
    running = Gunicorn(log, redis_server, APP, worker_class=WORKER, **env)
    yield running
    running.stop()


def on_every_worker(fleet: Gunicorn, path: str) -> dict[WsClient, int]:
    """WebSockets of ``path``, at least one on each worker; each with its worker's pid."""
    workers = fleet.workers()
    opened: dict[WsClient, int] = {}
    for _ in range(BOUND):
        client = WsClient(fleet.port, path)
        opened[client] = worker_serving(client, workers)
        if set(opened.values()) == workers and len(opened) >= 8:
            return opened
    raise AssertionError(f"{BOUND} sockets and still not on every worker{fleet.why()}")


def test_a_refused_or_banned_user_is_closed_with_4403(fleet: Gunicorn) -> None:
    banned = name("mallory")
    assert fleet.request("POST", "/ban", user=banned).status == 200
    for path in ("/stream", f"/stream?user={banned}"):
        code, reason, before = WsClient(fleet.port, path).close_code()
        assert (code, before) == (4403, []), reason
        assert "not open to this request" in reason


def test_end_streams_closes_with_4000_in_every_worker_and_only_those(fleet: Gunicorn) -> None:
    alice, bob, news = name("alice"), name("bob"), name("news")
    alices = on_every_worker(fleet, f"/stream?user={alice}&channel={news}")
    bobs = [WsClient(fleet.port, f"/stream?user={bob}&channel={news}") for _ in range(4)]
    sent = fleet.publish(data="before", id="1", channel=news).body["id"]
    for client in [*alices, *bobs]:
        assert client.event() == {"id": str(sent), "data": "before"}
    started = time.monotonic()
    assert fleet.request("POST", "/ban", user=alice).status == 200
    for client, worker in alices.items():
        code, reason, before = client.close_code()
        assert (code, before) == (4000, []), f"worker {worker}: {reason}"
        assert [set(fields) for fields in client.undispatched] == [{"retry"}], "the spread of the reconnects"
    assert time.monotonic() - started < 3.0
    fleet.publish(data="after", channel=news)
    for client in bobs:
        assert client.event() == {"data": "after"}
    code, _, _ = WsClient(fleet.port, f"/stream?user={alice}&channel={news}").close_code()
    assert code == 4403, "banned: the authorizer refuses it now"


def test_an_expired_admission_closes_with_4000(fleet: Gunicorn) -> None:
    client = WsClient(fleet.port, f"/stream?user={name('carol')}&exp={time.time() + 1.0}")
    started = time.monotonic()
    code, reason, _ = client.close_code()
    assert code == 4000, reason
    assert 0.8 < time.monotonic() - started < 3.0


def test_sigterm_closes_a_workers_sockets_with_1012_and_they_resume_with_nothing_missed(fleet: Gunicorn) -> None:
    dave, channel = name("dave"), name("feed")
    path = f"/stream?user={dave}&channel={channel}"
    opened = on_every_worker(fleet, path)
    victim = next(iter(opened.values()))
    first = fleet.publish(data="before", id="1", channel=channel).body["id"]
    for client in opened:
        assert client.event()["id"] == str(first)
    os.kill(victim, signal.SIGTERM)
    started = time.monotonic()
    ids = [fleet.publish(data=f"during {n}", id="1", channel=channel).body["id"] for n in range(3)]
    for client, worker in opened.items():
        if worker != victim:
            assert [e["id"] for e in client.events(3)] == [str(i) for i in ids]
            continue
        code, reason, before = client.close_code()
        assert code == 1012, reason
        assert time.monotonic() - started < 2.0, "ended at once, within the graceful timeout"
        got = [e["id"] for e in before]
        while len(got) < len(ids):  # as a client does: a worker still ending closes a new socket with 1012 too
            resumed = WsClient(fleet.port, f"{path}&lastEventId={got[-1] if got else first}")
            try:
                while len(got) < len(ids):
                    got.append(resumed.event()["id"])
            except Closed as closed:
                assert closed.code == 1012, closed
            resumed.close()
        assert got == [str(i) for i in ids], "each once, in order"
    wait_until(lambda: len(fleet.workers()) == 4 and victim not in fleet.workers(), 30, fleet.why())


def test_the_sse_stream_under_the_websocket_worker_ends_across_workers_and_answers_probes(
    fleet: Gunicorn, client_for: Callable[..., StreamClient]
) -> None:
    erin = name("erin")
    clients = open_streams(fleet, client_for, f"/stream?user={erin}", at_least=8)
    started = time.monotonic()
    assert fleet.request("POST", "/ban", user=erin).status == 200
    assert max(ended_within(clients, started, 5.0)) < 3.0
    # A worker that is starting (after the SIGTERM tests) is not ready until it has reached Redis.
    for probe in ("/stream/health/live", "/stream/health/ready"):

        def all_answer(probe: str = probe) -> bool:
            return {fleet.request("GET", probe).status for _ in range(8)} == {200}

        wait_until(all_answer, 20, f"{probe} answers 200 in every worker{fleet.why()}")


def test_sigterm_ends_a_workers_sse_streams_on_an_event_boundary(
    fleet: Gunicorn, client_for: Callable[..., StreamClient], tmp_path: Path
) -> None:
    frank = name("frank")
    clients = open_streams(fleet, client_for, f"/stream?user={frank}", at_least=8)
    victim = int(clients[0].headers["x-worker"])
    mine = [client for client in clients if int(client.headers["x-worker"]) == victim]
    started = time.monotonic()
    os.kill(victim, signal.SIGTERM)
    for client in mine:
        body = client.body()  # the rest of the response, to its clean end
        assert body.endswith(b"\n\n") or body == b"", body
    assert time.monotonic() - started < 3.0
    wait_until(lambda: len(fleet.workers()) == 4 and victim not in fleet.workers(), 30, fleet.why())
