"""Access control on open streams, in one process: ending them by channel or subject, and expiry.

The authorizer answers with an ``Admission`` that names the stream's subject
and when it expires; ``sse.end_streams`` ends the matching open streams on
an event boundary; the client comes back with ``Last-Event-ID`` and is
authorized again: refused (``403``) or resumed with nothing missed.
The same across gunicorn workers on Redis: tests/test_access_workers.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask import request

from flask_sse_stream import Admission
from flask_sse_stream.access import Ending
from flask_sse_stream.core import core_of
from flask_sse_stream.fanout import Fanout
from flask_sse_stream.stream import Stream
from tests.support.chunked import dechunk, read_to_the_end
from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.streams import until_end
from tests.support.waiting import wait_until


@pytest.fixture
def guarded(make_app, serve):
    """An app whose authorizer admits ``?user=`` unless banned, as that subject, until ``?exp=``."""
    # A queue long enough that a flood from the test never drops a client as too slow.
    app, sse = make_app(SSE_KEEPALIVE=5, SSE_QUEUE_SIZE=100_000)
    banned: set[str] = set()

    @sse.authorize
    def admit(channel: str) -> object:
        user = request.args.get("user")
        if user is None or user in banned:
            return False
        expires = request.args.get("exp")
        return Admission(subject=user, expires_at=float(expires) if expires else None)

    yield sse, serve(app).port, banned
    sse.close()


def test_ending_a_subject_ends_its_streams_only_and_its_client_is_refused_on_return(guarded, client_for) -> None:
    sse, port, banned = guarded
    alice = client_for(port, "/stream?user=alice&channel=news")
    alice_too = client_for(port, "/stream?user=alice&channel=mail")
    bob = client_for(port, "/stream?user=bob&channel=news")
    first = sse.send_new_event(data="before", id=True, channel="news")
    assert [m.data for m in alice.events(1)] == [m.data for m in bob.events(1)] == ["before"]

    banned.add("alice")  # the log-out: the session goes first, then the streams
    sse.end_streams(subject="alice")

    alice.wait_closed(5)
    alice_too.wait_closed(5)
    assert sse.stats["streams_ended"] == 2
    second = sse.send_new_event(data="after", id=True, channel="news")
    assert [m.data for m in until_end(bob, sse, "news")] == ["after"]
    again = client_for(port, "/stream?user=alice&channel=news", {"Last-Event-ID": str(first)})
    assert again.status == 403
    # Bob's reconnection after the same events would be admitted and miss nothing.
    resumed = client_for(port, "/stream?user=bob&channel=news", {"Last-Event-ID": str(first)})
    assert [(m.id, m.data) for m in until_end(resumed, sse, "news")] == [(second, "after")]


def test_ending_a_channel_or_a_channel_and_subject_ends_exactly_the_streams_that_match(guarded, client_for) -> None:
    sse, port, _ = guarded
    streams = {
        (user, channel): client_for(port, f"/stream?user={user}&channel={channel}")
        for user in ("alice", "bob")
        for channel in ("news", "mail")
    }
    sse.end_streams(channel="mail", subject="bob")
    streams["bob", "mail"].wait_closed(5)
    sse.end_streams(channel="news")
    streams["alice", "news"].wait_closed(5)
    streams["bob", "news"].wait_closed(5)
    assert [m.data for m in until_end(streams["alice", "mail"], sse, "mail")] == []
    assert sse.stats["streams"] == 1


def test_a_stream_ends_on_an_event_boundary_when_ended_under_a_flood(guarded, client_for) -> None:
    sse, port, _ = guarded
    client = client_for(port, "/stream?user=alice&channel=flood")
    stop = threading.Event()

    def flood() -> None:
        for n in range(50_000):  # fewer than the queue holds
            if stop.is_set():
                return
            sse.send_new_event(data="x" * 500 + str(n), channel="flood")

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        client.events(10)
        sse.end_streams(subject="alice")
        body, ended = dechunk(read_to_the_end(client.sock, client._raw))
    finally:
        stop.set()
        sender.join()
    assert ended, "the response was cut instead of ended"
    # Whole events, then the retry: of a planned end (SSE_RECONNECT_SPREAD).
    assert re.fullmatch(rb"(data: x{500}\d+\n\n)*retry: \d+\n\n", body), f"not whole events: ...{body[-80:]!r}"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path)
    yield server.url
    server.stop()


@pytest.mark.parametrize("ended_in", ["in-process", "redis, this worker", "redis, another worker"])
def test_a_stream_whose_authorization_was_under_way_when_its_subject_was_ended_does_not_open(
    make_app, serve, client_for, request: pytest.FixtureRequest, ended_in: str
) -> None:
    # On Redis the worker is cold: it has never opened a stream, so it has no
    # subscription yet when the ending is sent (by another worker, or by itself).
    config = {} if ended_in == "in-process" else {"SSE_REDIS_URL": request.getfixturevalue("redis_url")}
    app, sse = make_app(**config)
    other_worker = make_app(**config) if ended_in == "redis, another worker" else (app, sse)
    ender = other_worker[1]
    entered, release, verdicts = threading.Event(), threading.Event(), []

    @sse.authorize
    def slow_admit(channel: str) -> object:
        verdicts.append(True)
        if len(verdicts) == 1:  # the first request reads "admitted", then waits
            entered.set()
            release.wait(10)
        return Admission(subject="alice")

    port = serve(app).port
    sse.send_new_event(data="stored", id=True)
    opening: list[StreamClient] = []
    thread = threading.Thread(target=lambda: opening.append(StreamClient(port, "/stream")))
    thread.start()
    assert entered.wait(10)
    ender.end_streams(subject="alice")  # arrives while the authorizer works on a stale answer
    release.set()
    thread.join(10)
    (client,) = opening
    try:
        assert client.status == 200
        client.wait_closed(5)
        assert client.pending_events() == []  # not even the replay
    finally:
        client.close()
    later = client_for(port, "/stream")
    assert [m.data for m in later.events(1)] == ["stored"]  # asked again, and admitted


def test_a_stream_ends_when_its_admission_expires(guarded, client_for) -> None:
    sse, port, _ = guarded
    expires_at = time.time() + 0.5
    client = client_for(port, f"/stream?user=alice&exp={expires_at}")
    forever = client_for(port, "/stream?user=bob")
    client.wait_closed(5)
    ended_at = time.time()
    assert expires_at - 0.005 <= ended_at <= expires_at + 0.1, f"ended {ended_at - expires_at:+.3f} s from expiry"
    assert client.clean_end
    assert sse.stats["streams_expired"] == 1
    assert [m.data for m in until_end(forever, sse)] == []


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "queued"])
def test_a_stream_that_is_never_idle_still_ends_when_its_admission_expires(make_app, serve, direct) -> None:
    # The sender outpaces a client that reads 64 KiB every 5 ms: the stream's
    # writer always finds events queued and never waits, yet it stops at the
    # deadline (the client sees the end later, after what the socket holds).
    app, sse = make_app(SSE_QUEUE_SIZE=1_000_000, SSE_DIRECT_WRITES=direct)
    expires_at = time.time() + 1.5  # by then the socket's buffers are full: the writer blocks, then writes on

    @sse.authorize
    def admit(channel: str) -> object:
        return Admission(subject="alice", expires_at=expires_at)

    port = serve(app).port
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            for _ in range(100):
                sse.send_new_event(data="x" * 1000)
            time.sleep(0.005)  # about 20 MB/s

    def read(client: StreamClient) -> None:
        while not stop.is_set() and client.sock.recv(65536):
            time.sleep(0.005)  # about 13 MB/s

    client = StreamClient(port, "/stream")
    (stream,) = core_of(app).fanout.streams()
    threads = [threading.Thread(target=send), threading.Thread(target=read, args=(client,))]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: stream.closed, 5, "the stream to end at its deadline")
        ended_at = time.time()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        client.close()
        sse.close()
    # After the write under way (64 KiB to a client taking 64 KiB per 5 ms),
    # in a process whose threads share one GIL with a sender that never stops.
    assert expires_at - 0.005 <= ended_at <= expires_at + 0.5, f"ended {ended_at - expires_at:+.3f} s from expiry"


def test_an_admission_that_has_expired_is_refused(guarded, client_for) -> None:
    _, port, _ = guarded
    client = client_for(port, f"/stream?user=alice&exp={time.time() - 1}")
    assert client.status == 403
    assert b"expired" in client.body()


def test_every_stream_ends_within_its_maximum_age_and_not_before_nine_tenths_of_it(make_app, serve) -> None:
    app, sse = make_app(SSE_MAX_STREAM_AGE=1.0)
    port = serve(app).port
    opened = time.time()
    clients = [StreamClient(port, "/stream") for _ in range(5)]
    try:
        for client in clients:
            client.wait_closed(5)
            assert opened + 0.9 - 0.005 <= time.time() <= opened + 1.0 + 0.2
        assert sse.stats["streams_expired"] == 5
    finally:
        for client in clients:
            client.close()


def test_counts_in_one_process_are_its_open_streams(guarded, client_for) -> None:
    sse, port, _ = guarded
    a = client_for(port, "/stream?user=alice&channel=news&channel=mail")
    client_for(port, "/stream?user=bob&channel=news")
    assert (sse.count_streams(), sse.count_streams("news"), sse.count_streams("mail")) == (2, 2, 1)
    assert sse.count_streams_by_channel() == {"mail": 1, "news": 2}
    a.close()
    # The server learns that a client left from a write: the first after the
    # close draws the client's reset, the second fails. Both are keepalives
    # here (every 5 s), so within two of them.
    wait_until(lambda: sse.count_streams() == 1, 2 * 5 + 5, "the closed stream to leave")
    assert sse.stats["app_streams_by_channel"] == {"news": 1}


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({}, TypeError, "channel, a subject, or both"),
        ({"subject": True}, TypeError, "True"),
        ({"subject": 4.5}, TypeError, "4.5"),
        ({"subject": ""}, ValueError, "''"),
        ({"subject": "a\nb"}, ValueError, "'a\\nb'"),
        ({"subject": "x" * 201}, ValueError, "xxxx"),
        ({"channel": ""}, ValueError, "''"),
        ({"channel": 7}, TypeError, "7"),
    ],
)
def test_end_streams_refuses_bad_arguments_by_name(make_app, arguments, error, named) -> None:
    _, sse = make_app()
    with pytest.raises(error, match=named.replace("\\", "\\\\").replace("(", "\\(")):
        sse.end_streams(**arguments)


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"subject": b"alice"}, TypeError, "b'alice'"),
        ({"expires_at": "tomorrow"}, TypeError, "'tomorrow'"),
        ({"expires_at": float("nan")}, TypeError, "nan"),
        ({"expires_at": datetime(2030, 1, 1)}, TypeError, "timezone-aware"),
    ],
)
def test_an_admission_refuses_bad_values_by_name(arguments, error, named) -> None:
    with pytest.raises(error, match=named):
        Admission(**arguments)


def test_an_admission_takes_an_int_subject_and_an_aware_datetime() -> None:
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    admission = Admission(subject=42, expires_at=when)
    assert (admission.subject, admission.expires_at) == ("42", when.timestamp())


# -- what an ending costs ------------------------------------------------------------------


class CountingEnding(Ending):
    """An Ending that counts the streams it is asked about."""

    __slots__ = ()
    asked = [0]

    def matches(self, channels: tuple[str, ...], subjects: frozenset[str]) -> bool:
        CountingEnding.asked[0] += 1
        return Ending.matches(self, channels, subjects)


@pytest.mark.parametrize(
    ("channel", "subject", "ended"),
    [(None, "user-7", 2), ("room-3", None, 20), ("room-7", "user-7", 1), ("room-3", "nobody", 0), (None, "nobody", 0)],
)
def test_an_ending_asks_only_the_streams_it_may_end(channel, subject, ended) -> None:
    fanout = Fanout()
    streams = [Stream((f"room-{n % 100}",), "127.0.0.1", 16, subjects=frozenset({f"user-{n}"})) for n in range(2000)]
    streams.append(Stream(("lobby",), "127.0.0.1", 16, subjects=frozenset({"user-7"})))
    for stream in streams:
        assert fanout.add(stream, 10_000) is None
    CountingEnding.asked[0] = 0
    assert fanout.end(CountingEnding(channel, subject)) == ended
    # What it asks grows with what it may end (a subject's or a channel's streams), not with all 2,001.
    assert CountingEnding.asked[0] <= 20, CountingEnding.asked[0]
    assert sum(stream.closed for stream in streams) == ended
    for stream in streams:
        fanout.remove(stream)
    assert fanout.end(Ending(None, "user-7")) == 0
