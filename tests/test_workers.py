"""The Redis backend under ``gunicorn -k gevent -w 4`` (SPEC 2, 3 and 6), as a real deployment.

Each test has a private ``redis-server`` and a real gunicorn with four gevent
workers serving ``tests/apps/basic.py``, whose every answer names its worker
(``X-Worker: <pid>``). The tests open enough streams that every worker serves
some, publish through the load-balanced port (so through several workers),
and read the streams with the raw-socket client.

One gunicorn serves the tests that leave it intact (each on a channel of its
own); the tests that kill a worker, stop Redis or stop gunicorn start their
own.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from flask_sse_stream.backends.redis_connection import POOL_SIZE
from tests.support.client import Message, StreamClient
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import (
    GRACEFUL_TIMEOUT,
    WORKERS,
    Answer,
    Gunicorn,
    ended_within,
    open_streams,
    worker_of,
)

END = "end-of-test"
#: Seconds between keep-alives where a test watches them (SSE_KEEPALIVE).
KEEPALIVE = 0.5
_channels = itertools.count()


def until_end(client: StreamClient, running: Gunicorn, timeout: float = 10.0) -> list[Message]:
    """The events of ``client`` up to (not including) a live ``END`` event that the caller has sent."""
    deadline = time.monotonic() + timeout
    messages = []
    while True:
        try:
            message = client.next_event(max(deadline - time.monotonic(), 0.001))
        except (TimeoutError, EOFError) as error:
            raise AssertionError(
                f"worker {worker_of(client)}: {error} after {[(m.id, m.data) for m in messages]}{running.why()}"
            ) from None
        if message.data == END:
            return messages
        messages.append(message)


def subscribers(redis_server: RedisServer) -> list[dict[str, str]]:
    """The pub/sub connections of Redis: ``CLIENT LIST`` shows ``flags=P sub=1 cmd=subscribe`` (Redis 7)."""
    with redis_server.client() as client:
        return [c for c in client.client_list() if "P" in c["flags"] or c["sub"] != "0" or c["psub"] != "0"]


def redis_clients(redis_server: RedisServer) -> list[dict[str, str]]:
    """Every connection to Redis except the one asking."""
    with redis_server.client() as client:
        return [c for c in client.client_list() if c["cmd"] != "client|list"]


def owner_of(address: str, pids: set[int]) -> int | None:
    """Which of ``pids`` holds the TCP connection whose local end is ``address`` (``host:port``)."""
    port = int(address.rsplit(":", 1)[1])
    for pid in pids:
        for connection in psutil.Process(pid).net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port and connection.raddr:
                return pid
    return None


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, shared_redis: RedisServer) -> Iterator[Gunicorn]:
    """The gunicorn that the tests which leave it intact share, with its own key prefix."""
    running = Gunicorn(tmp_path_factory.mktemp("gunicorn") / "gunicorn.log", shared_redis, SSE_REDIS_PREFIX="workers")
    yield running
    running.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    """``own(redis_server, **env)``: a gunicorn of this test's own, stopped after it."""
    started: list[Gunicorn] = []

    def start(redis_server: RedisServer | None, **env: str) -> Gunicorn:
        running = Gunicorn(tmp_path / "gunicorn.log", redis_server, **env)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def channel() -> str:
    return f"workers-{next(_channels)}"


def test_an_event_sent_through_any_worker_reaches_every_client_of_every_worker_once_in_order(
    shared: Gunicorn, client_for: Callable[..., StreamClient], channel: str
) -> None:
    clients = open_streams(shared, client_for, f"/stream?channel={channel}")
    sent: list[tuple[int | None, str]] = []
    senders: Counter[int] = Counter()
    while len(sent) < 20 or set(senders) != shared.booted:
        assert len(sent) < 200, f"200 events and not sent through every worker: {senders}{shared.why()}"
        data = f"event {len(sent)}"
        answer = shared.publish(data=data, id="1" if len(sent) % 2 else "", channel=channel)
        senders[answer.worker] += 1
        sent.append((answer.body["id"], data))
    shared.publish(data=END, channel=channel)

    for client in clients:
        received = [(m.id, m.data) for m in until_end(client, shared)]
        assert received == sent, f"worker {worker_of(client)} (senders {senders}){shared.why()}"


def test_ids_are_unique_and_increase_by_one_across_workers(
    shared: Gunicorn, client_for: Callable[..., StreamClient], channel: str
) -> None:
    clients = open_streams(shared, client_for, f"/stream?channel={channel}")
    before = shared.last_id()
    answers = in_threads(
        4, lambda thread: [shared.publish(data=f"t{thread} n{i}", id="1", channel=channel) for i in range(100)]
    )
    by_id: dict[int, str] = {}
    senders: Counter[int] = Counter()
    for thread, sent in answers.items():
        ids = [answer.body["id"] for answer in sent]
        assert ids == sorted(ids), f"thread {thread} got ids out of order: {ids}"
        for i, answer in enumerate(sent):
            by_id[answer.body["id"]] = f"t{thread} n{i}"
            senders[answer.worker] += 1
    # The tests before gave `before` ids of this Redis: on a fresh one, exactly 1..400.
    assert sorted(by_id) == list(range(before + 1, before + 401)), (
        f"ids given (the counter was at {before}): {sorted(by_id)}{shared.why()}"
    )
    assert len(senders) >= 2, f"all 400 events were sent through one worker: {senders}"

    expected = [(id, by_id[id]) for id in sorted(by_id)]
    for client in clients:
        received = [(m.id, m.data) for m in client.events(400)]
        assert received == expected, f"worker {worker_of(client)}{shared.why()}"


def test_a_stream_of_16_channels_gets_their_events_in_id_order_whichever_workers_send_them(
    shared: Gunicorn, client_for: Callable[..., StreamClient], channel: str
) -> None:
    # Each worker subscribes to the 16 channels on its one subscription
    # connection, which receives messages in the order Redis published them.
    channels = [f"{channel}-{n}" for n in range(16)]
    clients = open_streams(shared, client_for, "/stream?" + "&".join(f"channel={c}" for c in channels))

    def send(thread: int) -> list[Answer]:
        pick = random.Random(thread)
        return [shared.publish(data=f"t{thread} n{i}", id="1", channel=pick.choice(channels)) for i in range(60)]

    answers = in_threads(4, send)
    by_id = {answer.body["id"]: f"t{thread} n{i}" for thread, sent in answers.items() for i, answer in enumerate(sent)}
    assert len({answer.worker for sent in answers.values() for answer in sent}) >= 2, "one worker sent everything"
    expected = [(id, by_id[id]) for id in sorted(by_id)]
    for client in clients:
        received = [(m.id, m.data) for m in client.events(len(expected))]
        assert received == expected, f"worker {worker_of(client)}{shared.why()}"


def test_one_redis_subscription_per_worker_whatever_the_number_of_streams(
    shared: Gunicorn, shared_redis: RedisServer, client_for: Callable[..., StreamClient], channel: str
) -> None:
    path = f"/stream?channel={channel}"

    def connections_to_redis(streams: int) -> Counter[int | None]:
        found = subscribers(shared_redis)
        owners = Counter(owner_of(subscriber["addr"], shared.booted) for subscriber in found)
        assert owners == Counter(shared.booted), (
            f"with {streams} streams, Redis has {len(found)} subscribers, held by {owners}"
            f" (workers {sorted(shared.booted)}): {found}{shared.why()}"
        )
        return Counter(owner_of(client["addr"], shared.booted) for client in redis_clients(shared_redis))

    clients = open_streams(shared, client_for, path)
    few = connections_to_redis(len(clients))
    clients += open_streams(shared, client_for, path, at_least=200 - len(clients))
    many = connections_to_redis(len(clients))
    per_worker = Counter(worker_of(client) for client in clients)
    # A worker holds its subscription and the pool its senders and new streams
    # draw from: as many connections as it ever used at once, the subscription
    # included, at most POOL_SIZE, however many streams it serves.
    for held in (few, many):
        over = {pid: count for pid, count in held.items() if pid is not None and count > POOL_SIZE}
        assert not over, (
            f"workers over {POOL_SIZE} connections to Redis: {over} (streams per worker: {per_worker}){shared.why()}"
        )

    shared.publish(data=END, channel=channel)
    for client in clients:
        assert until_end(client, shared) == []


def test_replay_and_live_join_exactly_once_while_several_workers_send_a_burst(
    shared: Gunicorn, client_for: Callable[..., StreamClient], channel: str
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = f"/stream?channel={channel}"
    # Ids given before the burst, on another channel: a client may resume from one of them, or any id
    # up to `before`. (Not from 0 up: a new counter starts at Redis's clock, no id below it is given.)
    earlier = [shared.publish(data=f"before {i}", id="1", channel=f"{channel}-earlier").body["id"] for i in range(5)]
    before = shared.last_id()
    assert earlier == list(range(earlier[0], earlier[0] + 5)) and earlier[-1] <= before, (earlier, before)
    sent: list[int] = []
    senders: Counter[int] = Counter()
    failures: list[BaseException] = []

    def burst() -> None:
        try:
            for _ in range(100):
                answer = shared.request("POST", "/burst", n=5, id="1", channel=channel)
                assert answer.status == 200, answer
                sent.extend(answer.body["ids"])
                senders[answer.worker] += 1
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            failures.append(error)

    threads = [threading.Thread(target=burst) for _ in range(2)]
    for thread in threads:
        thread.start()
    joined: list[tuple[StreamClient, int, bool]] = []
    # Each client connects once the burst has reached a random point of its own.
    for n, point in enumerate(sorted(rng.sample(range(1000), 30))):
        wait_until(lambda point=point: len(sent) >= point or failures or not any(t.is_alive() for t in threads), 30)
        last = shared.last_id()
        resume = [None, 0, last, rng.randint(before, last), rng.randint(earlier[0], before)][n % 5]
        during = any(thread.is_alive() for thread in threads)
        client = client_for(shared.port, path, None if resume is None else {"Last-Event-ID": str(resume)})
        assert client.status == 200, shared.why()
        joined.append((client, resume or 0, during))
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    final = before + 1000
    assert sorted(sent) == list(range(before + 1, final + 1)), f"seed {seed}: ids given {sorted(sent)}"
    assert len(senders) >= 2, f"the burst went through one worker only: {senders}"
    assert sum(during for _, _, during in joined) >= 10, "too few clients connected during the burst"

    for client, resume, during in joined:
        first = max(resume, before) + 1
        expected = list(range(first, final + 1))
        received = [m.id for m in client.events(len(expected), timeout=20)] if expected else []
        assert received == expected, (
            f"seed {seed}: client on worker {worker_of(client)} with Last-Event-ID {resume}"
            f" (connected {'during' if during else 'after'} the burst){shared.why()}"
        )
    workers = {worker_of(client) for client, _, _ in joined}
    assert len(workers) >= 2, f"all 30 clients landed on one worker: {workers}"
    shared.publish(data=END, channel=channel)
    for client, _, _ in joined:
        assert until_end(client, shared) == [], f"seed {seed}: worker {worker_of(client)}"


def streams_and_a_victim(
    running: Gunicorn, client_for: Callable[..., StreamClient], path: str, channel: str
) -> tuple[list[int], int, list[StreamClient], list[StreamClient]]:
    """Streams on every worker that have 3 stored events; the busiest worker, its streams and the others."""
    clients = open_streams(running, client_for, path)
    before = [running.publish(data=f"before {i}", id="1", channel=channel).body["id"] for i in range(3)]
    for client in clients:
        assert [m.id for m in client.events(3)] == before, running.why()
    victim = Counter(worker_of(client) for client in clients).most_common(1)[0][0]
    orphans = [client for client in clients if worker_of(client) == victim]
    others = [client for client in clients if worker_of(client) != victim]
    return before, victim, orphans, others


def test_the_store_lives_in_redis_and_outlives_a_killed_worker(
    own_redis: RedisServer, own: Callable[..., Gunicorn], client_for: Callable[..., StreamClient], channel: str
) -> None:
    running = own(own_redis)
    path = f"/stream?channel={channel}"
    before, victim, orphans, others = streams_and_a_victim(running, client_for, path, channel)
    os.kill(victim, signal.SIGKILL)
    for client in orphans:
        client.wait_closed(5)
    # Sent after the kill, before the killed worker's clients come back.
    gap = [running.publish(data=f"gap {i}", id="1", channel=channel).body["id"] for i in range(4)]

    replacements: set[int] = set()

    def replaced() -> bool:
        worker = running.request("GET", "/info").worker
        if worker not in running.booted:
            replacements.add(worker)
        return bool(replacements)

    wait_until(replaced, 30, f"a new worker answers /info{running.why()}")
    assert victim not in running.workers(), running.why()
    for client in others:
        assert [m.id for m in client.events(4)] == gap, f"worker {worker_of(client)}{running.why()}"

    resumed = []
    for client in orphans:
        again = client_for(running.port, path, {"Last-Event-ID": client.last_event_id})
        assert again.status == 200 and worker_of(again) != victim, running.why()
        received = [(m.id, m.data) for m in again.events(4)]
        assert received == [(id, f"gap {i}") for i, id in enumerate(gap)], f"worker {worker_of(again)}{running.why()}"
        resumed.append(again)

    # A client from the start, on any worker, and on a replacement worker too.
    stored = [(id, f"before {i}") for i, id in enumerate(before)] + [(id, f"gap {i}") for i, id in enumerate(gap)]
    fresh: list[StreamClient] = []
    while not fresh or worker_of(fresh[-1]) not in replacements:
        assert len(fresh) < 100, f"no stream on the replacement workers {replacements}{running.why()}"
        client = client_for(running.port, path, {"Last-Event-ID": "0"})
        assert client.status == 200, running.why()
        assert [(m.id, m.data) for m in client.events(len(stored))] == stored, f"worker {worker_of(client)}"
        fresh.append(client)

    running.publish(data=END, channel=channel)
    for client in others + resumed + fresh:
        assert until_end(client, running) == [], f"worker {worker_of(client)}"


def only_comments(chunk: bytes | None) -> bool:
    return chunk is not None and all(line.startswith(b":") for line in chunk.split(b"\n") if line)


def test_streams_outlive_redis_going_away_and_every_worker_resubscribes(
    own_redis: RedisServer, own: Callable[..., Gunicorn], client_for: Callable[..., StreamClient], channel: str
) -> None:
    running = own(own_redis, SSE_KEEPALIVE=str(KEEPALIVE))
    path = f"/stream?channel={channel}"
    # Streams opened before any stored event, and streams that replay some.
    early = open_streams(running, client_for, path)
    stored = [running.publish(data=f"stored {i}", id="1", channel=channel).body["id"] for i in range(3)]
    late = open_streams(running, client_for, path)
    clients = early + late
    for client in clients:
        assert [m.id for m in client.events(3)] == stored, running.why()
    wait_until(lambda: len(subscribers(own_redis)) == WORKERS, 10, f"{WORKERS} subscribers{running.why()}")

    for client in clients:  # read what has come so far: what follows was sent after Redis went away
        try:
            while True:
                client.next_chunk(0.001)
        except TimeoutError:
            pass
    own_redis.stop()
    # Keep-alives go on: three of them are at least two keep-alive periods.
    for client in clients:
        for _ in range(3):
            chunk = client.next_chunk(KEEPALIVE * 4)
            assert only_comments(chunk), f"worker {worker_of(client)}: {chunk!r}{running.why()}"

    refused = []
    for n in range(4):
        answer = running.request("POST", "/publish", data=f"lost {n}", id="1" if n % 2 else "", channel=channel)
        refused.append(answer)
        assert answer.status == 503, f"{answer}{running.why()}"
        assert answer.seconds < 3, f"{answer}{running.why()}"
        assert "Redis" in answer.body["error"] and own_redis.url in answer.body["error"], answer

    restarted = time.monotonic()
    own_redis.start()  # same port, no data
    wait_until(
        lambda: len(subscribers(own_redis)) == WORKERS,
        15,
        f"every worker resubscribes by itself{running.why()}",
    )
    resubscribed = time.monotonic() - restarted
    owners = Counter(owner_of(s["addr"], running.booted) for s in subscribers(own_redis))
    assert owners == Counter(running.booted), owners

    # Redis lost its data: every stream stays open and is told in-band, on its own connection: the
    # reset event, then the store (empty now), then live events; ids go on past the highest seen.
    for client in clients:
        assert client.next_event(10).event == "sse-reset", f"worker {worker_of(client)}{running.why()}"
    after = running.publish(data="after", id="1", channel=channel).body["id"]
    running.publish(data="live after", channel=channel)
    running.publish(data=END, channel=channel)
    assert after > stored[-1], f"the id after a loss of data is {after}, after {stored[-1]} was given before"
    wrong = []
    for client in clients:
        received = [(m.event, m.id, m.data) for m in until_end(client, running)]
        if received != [("message", after, "after"), ("message", None, "live after")]:
            wrong.append((worker_of(client), received))
    assert not wrong, (
        f"after Redis came back empty ({resubscribed:.2f} s to resubscribe), the streams did not get the"
        f" stored event {after} and a live one after the reset: {wrong}{running.why()}"
    )


def test_several_workers_on_the_in_process_store_warn_loudly_at_start(own: Callable[..., Gunicorn]) -> None:
    running = own(None, SSE_REDIS_URL="")  # no stream is opened: the workers have only answered /info
    warnings = [line for line in running.server.output.splitlines() if "SSE_REDIS_URL" in line]
    assert warnings, running.why()
    assert all("flask_sse_stream" in line for line in warnings), running.why()


def test_sigterm_to_one_worker_ends_its_streams_at_once_and_its_clients_resume_elsewhere(
    own_redis: RedisServer, own: Callable[..., Gunicorn], client_for: Callable[..., StreamClient], channel: str
) -> None:
    running = own(own_redis)
    path = f"/stream?channel={channel}"
    before, victim, orphans, others = streams_and_a_victim(running, client_for, path, channel)
    started = time.monotonic()
    os.kill(victim, signal.SIGTERM)
    ended = ended_within(orphans, started, 1.0)
    assert max(ended) < 1.0, f"streams of worker {victim} ended {ended} s after its SIGTERM{running.why()}"

    gap = [running.publish(data=f"gap {i}", id="1", channel=channel).body["id"] for i in range(4)]
    tries: list[int] = []

    def reconnect(last_event_id: str) -> StreamClient:
        """Like a browser: a new connection with the last id it saw, again after a clean end."""
        # Until it stops accepting (gunicorn's gevent worker looks once a second), the ending
        # worker answers with a stream that ends at once: how many reconnections that takes
        # depends on the machine's speed, so the bound is time, well past that second.
        deadline, attempt = time.monotonic() + 10.0, 0
        while time.monotonic() < deadline:
            attempt += 1
            client = client_for(running.port, path, {"Last-Event-ID": last_event_id})
            assert client.status == 200, running.why()
            if worker_of(client) != victim:
                tries.append(attempt)
                return client
            client.wait_closed(1.0)
        raise AssertionError(f"{attempt} reconnections in 10 s and still on the ending worker {victim}{running.why()}")

    resumed = [reconnect(client.last_event_id) for client in orphans]
    live = [running.publish(data=f"live {i}", id="1", channel=channel).body["id"] for i in range(2)]
    for client in resumed + others:
        received = [m.id for m in client.events(len(gap + live))]
        assert received == gap + live, f"worker {worker_of(client)} (tries {tries}){running.why()}"

    fresh = reconnect("0")
    assert [m.id for m in fresh.events(len(before + gap + live))] == before + gap + live, running.why()
    running.publish(data=END, channel=channel)
    for client in [*resumed, *others, fresh]:
        assert until_end(client, running) == [], f"worker {worker_of(client)}"

    # gunicorn replaces the worker. (Wait until the new one serves: a SIGTERM
    # that reaches a gevent worker in its first moments, before gunicorn sets
    # its signal handlers, is lost, and stopping gunicorn then takes the whole
    # graceful timeout.)
    wait_until(
        lambda: running.request("GET", "/info").worker not in running.booted,
        30,
        f"a worker replaces {victim}{running.why()}",
    )
    assert victim not in running.workers(), running.why()


def test_sigterm_to_gunicorn_ends_every_stream_within_a_second_and_exits_well_before_the_graceful_timeout(
    own_redis: RedisServer, own: Callable[..., Gunicorn], client_for: Callable[..., StreamClient], channel: str
) -> None:
    running = own(own_redis)
    clients = open_streams(running, client_for, f"/stream?channel={channel}")
    sent = running.publish(data="before", id="1", channel=channel).body["id"]
    for client in clients:
        assert client.next_event().id == sent, running.why()

    started = time.monotonic()
    running.server.signal(signal.SIGTERM)  # the process group: the master and every worker
    ended = ended_within(clients, started, 1.0)
    running.server.process.wait(GRACEFUL_TIMEOUT + 5)
    exited = time.monotonic() - started
    assert max(ended) < 1.0, f"the last stream ended {max(ended):.2f} s after SIGTERM{running.why()}"
    assert exited < 4.0, f"gunicorn exited {exited:.2f} s after SIGTERM{running.why()}"


def in_threads(count: int, send: Callable[[int], list[Answer]]) -> dict[int, list[Answer]]:
    """``send(n)`` in ``count`` OS threads at once; each thread's answers (an error in one fails the test)."""
    answers: dict[int, list[Answer]] = {}
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            answers[n] = send(n)
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    return answers
