"""The backend contract (SPEC 1-3, 6), through the public API, for both backends.

``BackendContract`` holds the tests; ``TestMemoryBackend`` runs them on the
in-process store and ``TestRedisBackend`` on a private ``redis-server`` (one
per module, a fresh ``SSE_REDIS_PREFIX`` per test), plus what only Redis
promises: several apps (workers) on one Redis, keys under the prefix, one
subscription per process, a store that outlives the app.
"""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.backends.redis_connection import POOL_SIZE
from flask_sse_stream.core import core_of
from tests.support.backend_apps import OnABackend
from tests.support.redis_server import RedisServer, ids_from_one
from tests.support.streams import END, until_end
from tests.support.waiting import wait_until

#: Events of every shape, as ``send_new_event`` keywords: ``data`` is what ``history`` must give back.
SENT: tuple[dict[str, Any], ...] = (
    {"data": {"x": 1, "nested": [1, "two", None, {"y": 2.5}]}, "event": "update", "retry": 3000},
    {"data": "line one\r\nline two\rthree\nfour\r\n"},
    {"data": '{"looks": "like JSON"}'},
    {"data": "42"},
    {"data": 42},
    {"data": ["a", 1, True, None]},
    {"data": None, "event": "no-data"},
    {"data": ""},
    {"data": "unicode é ☃ \u2028 \x85 😀", "retry": 1},
)


def store(sse: SSE, count: int, channel: str = "sse") -> list[int | None]:
    """Send ``count`` id'd events to ``channel``; return their ids."""
    return [sse.send_new_event(data="stored", id=True, channel=channel) for _ in range(count)]


def send_to(sse: SSE, plan: list[str]) -> None:
    """One id'd event per channel of ``plan``, ids from 1; the data is ``<channel><id>``."""
    for number, channel in enumerate(plan, start=1):
        assert sse.send_new_event(data=f"{channel}{number}", id=True, channel=channel) == number


def ids_of(messages) -> list[int | None]:
    return [message.id for message in messages]


def assert_reset(message, name: str = "sse-reset") -> None:
    assert message.event == name, message.lines
    assert message.data == ""
    assert not any(line.startswith("id") for line in message.lines), message.lines


def send_while_reading(monkeypatch, app: Flask, sse: SSE, after_read: bool) -> list[int | None]:
    """A race made deterministic: each stream's read of the store sends an id'd "during" event.

    Before it reads, or with ``after_read`` right after it (before the stream
    has written anything). Returns the ids of those sends as they happen.
    """
    backend = core_of(app).backend
    original = backend.read_store
    sent: list[int | None] = []

    def read_with_a_send(channels, after=None):
        if after_read:
            facts = original(channels, after)
        sent.append(sse.send_new_event(data="during", id=True))
        return facts if after_read else original(channels, after)

    monkeypatch.setattr(backend, "read_store", read_with_a_send)
    return sent


def describe_run(got: list, expected: list) -> str:
    counts = Counter(got)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(expected) - set(got))
    first_bad = next(
        (n for n, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected))
    )
    return (
        f"{len(got)} ids, expected {len(expected)}; duplicates {duplicates[:10]}, missing {missing[:10]}"
        f" ({len(missing)} in all); first difference at position {first_bad}:"
        f" got {got[first_bad : first_bad + 5]}, expected {expected[first_bad : first_bad + 5]}"
    )


class BackendContract(OnABackend):
    """What every backend guarantees. Subclasses provide ``backend_config``."""

    # -- ids ------------------------------------------------------------------------

    def test_ids_count_from_one_shared_by_all_channels(self, new_app):
        _, sse = new_app()

        assert sse.send_new_event(data="live") is None
        sent = [sse.send_new_event(data=c, id=True, channel=c) for c in ["a", "b", "a", "sse", "c"]]
        assert sse.send_new_event(data="live again", channel="a") is None
        assert sse.send_new_event(data="b", id=True, channel="b") == 6

        assert sent == [1, 2, 3, 4, 5]
        assert list(sse.history("a")) == [1, 3]
        assert list(sse.history("b")) == [2, 6]
        assert list(sse.history("c")) == [5]
        assert list(sse.messages) == [4]
        assert sse.history("never-used") == {}

    def test_live_only_events_reach_open_streams_and_are_not_stored(self, new_app, serve, client_for):
        app, sse = new_app()
        server = serve(app)
        early = client_for(server.port)
        sse.send_new_event(data="live-1")
        sse.send_new_event(data="stored", id=True)
        sse.send_new_event(data="live-2")
        # Once this process has delivered them (with Redis, they come back
        # through its subscription), a new stream gets the stored one only.
        assert [(m.id, m.data) for m in early.events(3, timeout=5)] == [
            (None, "live-1"),
            (1, "stored"),
            (None, "live-2"),
        ]

        late = client_for(server.port)

        assert [(m.id, m.data) for m in until_end(late, sse)] == [(1, "stored")]
        assert until_end(early, sse) == []
        assert [(id, event.data) for id, event in sse.messages.items()] == [(1, "stored")]

    # -- the store --------------------------------------------------------------------

    def test_history_holds_each_stored_event_with_its_fields(self, new_app):
        _, sse = new_app()
        for kwargs in SENT:
            sse.send_new_event(id=True, channel="fields", **kwargs)

        history = sse.history("fields")

        assert list(history) == list(range(1, len(SENT) + 1))
        assert [(e.id, e.event, e.data, e.retry) for e in history.values()] == [
            (n, kwargs.get("event"), kwargs["data"], kwargs.get("retry")) for n, kwargs in enumerate(SENT, 1)
        ]
        # A str stays a str, whatever it looks like; JSON values stay their type.
        assert [type(e.data) for e in history.values()] == [type(kwargs["data"]) for kwargs in SENT]

    def test_replayed_events_carry_the_same_fields_as_live_ones(self, new_app, serve, client_for):
        app, sse = new_app()
        server = serve(app)
        live = client_for(server.port)
        for kwargs in SENT:
            sse.send_new_event(id=True, **kwargs)

        replayed = client_for(server.port)

        live_messages = until_end(live, sse)
        assert [(m.id, m.event, m.data) for m in live_messages][:2] == [
            (1, "update", '{"nested": [1, "two", null, {"y": 2.5}], "x": 1}'),
            (2, "message", "line one\nline two\nthree\nfour\n"),
        ]
        assert [m.lines for m in until_end(replayed, sse)] == [m.lines for m in live_messages]

    def test_max_history_keeps_the_last_events_of_each_channel(self, new_app, serve, client_for):
        app, sse = new_app(SSE_MAX_HISTORY=3)
        server = serve(app)
        send_to(sse, ["a", "a", "b", "a", "a", "b", "a"])

        assert list(sse.history("a")) == [4, 5, 7]
        assert list(sse.history("b")) == [3, 6]
        client = client_for(server.port, "/stream?channel=a", {"Last-Event-ID": "3"})
        assert [(m.id, m.data) for m in until_end(client, sse, "a")] == [(4, "a4"), (5, "a5"), (7, "a7")]

    @pytest.mark.parametrize(
        ("path", "headers"),
        [("/stream", {}), ("/stream", {"Last-Event-ID": "0"}), ("/stream?lastEventId=0", {})],
        ids=["no-resume-point", "header-zero", "query-zero"],
    )
    def test_new_stream_gets_no_reset_after_evictions(self, new_app, serve, client_for, path, headers):
        # Nothing to resume: the whole store is what the client asked for.
        app, sse = new_app(SSE_MAX_HISTORY=2)
        server = serve(app)
        send_to(sse, ["sse"] * 5)

        client = client_for(server.port, path, headers)

        messages = until_end(client, sse)
        assert [(m.event, m.id) for m in messages] == [("message", 4), ("message", 5)]

    @pytest.mark.parametrize("resume", [None, "2", "5", "100"])
    def test_max_history_zero_stores_nothing_and_never_resets(self, new_app, serve, client_for, resume):
        app, sse = new_app(SSE_MAX_HISTORY=0)
        server = serve(app)
        assert store(sse, 5) == [1, 2, 3, 4, 5]
        assert sse.history() == {}
        assert sse.messages == {}

        client = client_for(server.port, "/stream", {"Last-Event-ID": resume} if resume else {})
        assert sse.send_new_event(data="live", id=True) == 6

        assert [(m.id, m.data, m.event) for m in until_end(client, sse)] == [(6, "live", "message")]

    def test_history_ttl_expires_stored_events_but_not_the_counter(self, new_app):
        _, sse = new_app(SSE_HISTORY_TTL=0.3)
        store(sse, 2, "a")
        store(sse, 1, "b")
        assert list(sse.history("a")) == [1, 2]

        wait_until(lambda: sse.history("a") == {} and sse.history("b") == {}, 5, "the stored events to expire")

        assert sse.send_new_event(data="fresh", id=True, channel="a") == 4
        assert [(id, event.data) for id, event in sse.history("a").items()] == [(4, "fresh")]

    # -- replay -----------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("path", "headers", "expected"),
        [
            ("/stream", {}, [1, 2, 3, 4, 5]),
            ("/stream", {"Last-Event-ID": "0"}, [1, 2, 3, 4, 5]),
            ("/stream", {"Last-Event-ID": "2"}, [3, 4, 5]),
            ("/stream?lastEventId=3", {}, [4, 5]),
            ("/stream", {"Last-Event-ID": "5"}, []),
        ],
        ids=["no-resume-point", "zero", "header", "query", "at-the-end"],
    )
    def test_stream_replays_what_follows_the_resume_point_then_live_events(
        self, new_app, serve, client_for, path, headers, expected
    ):
        app, sse = new_app()
        server = serve(app)
        send_to(sse, ["sse"] * 5)

        client = client_for(server.port, path, headers)
        sse.send_new_event(data="live", id=True)

        messages = until_end(client, sse)
        assert [(m.id, m.data) for m in messages] == [(n, f"sse{n}") for n in expected] + [(6, "live")]

    def test_multi_channel_stream_replays_its_channels_merged_in_id_order(self, new_app, serve, client_for):
        app, sse = new_app()
        server = serve(app)
        send_to(sse, ["b", "a", "c", "a", "b", "c", "b"])

        whole = client_for(server.port, "/stream?channel=a&channel=b")
        resumed = client_for(server.port, "/stream?channel=b&channel=a", {"Last-Event-ID": "2"})

        assert [(m.id, m.data) for m in until_end(whole, sse, "a")] == [
            (1, "b1"),
            (2, "a2"),
            (4, "a4"),
            (5, "b5"),
            (7, "b7"),
        ]
        assert ids_of(until_end(resumed, sse, "b")) == [4, 5, 7]

    # -- reset ------------------------------------------------------------------------

    def test_reset_when_the_resume_point_was_evicted_by_max_history(self, new_app, serve, client_for):
        app, sse = new_app(SSE_MAX_HISTORY=3)
        server = serve(app)
        send_to(sse, ["sse"] * 6)

        evicted = client_for(server.port, "/stream", {"Last-Event-ID": "2"})
        kept = client_for(server.port, "/stream", {"Last-Event-ID": "3"})

        reset, *rest = until_end(evicted, sse)
        assert_reset(reset)
        assert ids_of(rest) == [4, 5, 6]
        messages = until_end(kept, sse)
        assert ids_of(messages) == [4, 5, 6], [m.event for m in messages]

    def test_reset_when_the_resume_point_expired(self, new_app, serve, client_for):
        app, sse = new_app(SSE_HISTORY_TTL=0.3, SSE_RESET_EVENT="reload")
        server = serve(app)
        store(sse, 2)
        wait_until(lambda: sse.history() == {}, 5, "the stored events to expire")
        assert sse.send_new_event(data="fresh", id=True) == 3

        expired = client_for(server.port, "/stream", {"Last-Event-ID": "1"})
        nothing_lost = client_for(server.port, "/stream", {"Last-Event-ID": "2"})

        reset, *rest = until_end(expired, sse)
        assert_reset(reset, "reload")
        assert [(m.id, m.data) for m in rest] == [(3, "fresh")]
        assert [(m.id, m.data, m.event) for m in until_end(nothing_lost, sse)] == [(3, "fresh", "message")]

    @pytest.mark.parametrize("resume", ["4", "1000", "9" * 20])
    def test_reset_when_the_resume_point_is_above_the_last_id(self, new_app, serve, client_for, resume):
        app, sse = new_app()
        server = serve(app)
        send_to(sse, ["sse"] * 3)

        client = client_for(server.port, "/stream", {"Last-Event-ID": resume})

        reset, *rest = until_end(client, sse)
        assert_reset(reset)
        assert [(m.id, m.data) for m in rest] == [(1, "sse1"), (2, "sse2"), (3, "sse3")]

    # -- exactly once across the replay/live boundary --------------------------------------

    @pytest.mark.parametrize("moment", ["before-reading", "after-reading"])
    @pytest.mark.parametrize("others", [0, 1], ids=["first-stream", "second-stream"])
    def test_event_sent_during_the_replay_arrives_once_in_order(
        self, new_app, serve, client_for, monkeypatch, moment, others
    ):
        app, sse = new_app()
        server = serve(app)
        # With a stream open already, this process's subscription is live when
        # the replay runs; without one, the replay is what starts it.
        other = [client_for(server.port, "/stream?channel=other") for _ in range(others)]
        send_to(sse, ["sse", "sse"])
        sent = send_while_reading(monkeypatch, app, sse, after_read=moment == "after-reading")

        client = client_for(server.port)
        sse.send_new_event(data="after", id=True)

        assert sent == [3]
        assert [(m.id, m.data) for m in until_end(client, sse)] == [
            (1, "sse1"),
            (2, "sse2"),
            (3, "during"),
            (4, "after"),
        ]
        for stream in other:
            assert until_end(stream, sse, "other") == []

    @pytest.mark.parametrize("moment", ["before-reading", "after-reading"])
    def test_event_sent_during_a_replay_after_an_id_never_given_arrives_once(
        self, new_app, serve, client_for, monkeypatch, moment
    ):
        app, sse = new_app()
        server = serve(app)
        client_for(server.port, "/stream?channel=other")  # this process's subscription is live
        send_to(sse, ["sse", "sse"])
        sent = send_while_reading(monkeypatch, app, sse, after_read=moment == "after-reading")

        client = client_for(server.port, "/stream", {"Last-Event-ID": "1000"})
        sse.send_new_event(data="after", id=True)

        assert sent == [3]
        reset, *rest = until_end(client, sse)
        assert_reset(reset)
        assert [(m.id, m.data) for m in rest] == [(1, "sse1"), (2, "sse2"), (3, "during"), (4, "after")]

    def test_clients_connecting_during_a_burst_get_contiguous_ids(self, new_app, serve, client_for):
        total, clients_count = 1000, 20
        # Big enough that no stream is cut for falling behind: this is about the replay/live boundary.
        app, sse = new_app(SSE_MAX_HISTORY=total * 2, SSE_QUEUE_SIZE=total * 4, SSE_KEEPALIVE=30)
        server = serve(app)
        seed = random.randrange(2**32)
        moments = sorted(random.Random(seed).sample(range(1, total), clients_count))
        reached = [threading.Event() for _ in moments]
        progress = {"sent": 0}
        failures: list[BaseException] = []

        def sender() -> None:
            try:
                next_moment = 0
                for number in range(1, total + 1):
                    assert sse.send_new_event(data=str(number), id=True) == number
                    progress["sent"] = number
                    while next_moment < len(moments) and number >= moments[next_moment]:
                        reached[next_moment].set()
                        next_moment += 1
            except BaseException as error:
                failures.append(error)
            finally:
                for moment in reached:
                    moment.set()

        connected: list[tuple[int, int, Any]] = []
        lock = threading.Lock()

        def connect(index: int) -> None:
            reached[index].wait(30)
            sent = progress["sent"]
            resume = [0, random.Random(seed + index).randint(0, sent), sent][index % 3]
            headers = {"Last-Event-ID": str(resume)} if resume else {}
            try:
                client = client_for(server.port, "/stream", headers)
            except BaseException as error:
                failures.append(error)
                return
            with lock:
                connected.append((index, resume, client))

        connectors = [threading.Thread(target=connect, args=(index,), daemon=True) for index in range(clients_count)]
        for thread in connectors:
            thread.start()
        sending = threading.Thread(target=sender, daemon=True)
        # Switch threads often, so that connects interleave with the sends.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)
        try:
            sending.start()
            sending.join(30)
            for thread in connectors:
                thread.join(30)
        finally:
            sys.setswitchinterval(switch_interval)

        assert not failures, (seed, failures)
        assert progress["sent"] == total
        assert len(connected) == clients_count
        sse.send_new_event(data=END)
        for index, resume, client in sorted(connected, key=lambda item: item[0]):
            assert client.status == 200
            got = []
            deadline = time.monotonic() + 20
            while True:
                message = client.next_event(max(deadline - time.monotonic(), 0.001))
                if message.data == END:
                    break
                assert message.data == str(message.id)
                got.append(message.id)
            expected = list(range(resume + 1, total + 1))
            assert got == expected, f"client {index} resumed from {resume} (seed {seed}): {describe_run(got, expected)}"


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def backend_config(self) -> dict[str, Any]:
        return {}


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def connections_of(redis_client) -> list[dict[str, Any]]:
    """The other clients of that Redis (CLIENT LIST without the asking one)."""
    me = redis_client.client_id()
    return [entry for entry in redis_client.client_list() if int(entry["id"]) != me]


class TestRedisBackend(BackendContract):
    """On Redis, each process subscribing to the channels it serves, or to the whole app."""

    @pytest.fixture(params=["channels", "app"])
    def subscribe(self, request) -> str:
        return request.param  # type: ignore[no-any-return]

    @pytest.fixture
    def backend_config(self, redis_server, subscribe) -> dict[str, Any]:
        prefix = new_prefix()
        ids_from_one(redis_server.url, prefix)  # the contract's ids are the in-process store's: from 1
        return {"SSE_REDIS_URL": redis_server.url, "SSE_REDIS_PREFIX": prefix, "SSE_REDIS_SUBSCRIBE": subscribe}

    @pytest.fixture
    def own_redis(self, tmp_path) -> Iterator[RedisServer]:
        """A Redis for this test alone, where server-wide views (keys, clients) are its own."""
        server = RedisServer(tmp_path)
        yield server
        server.stop()

    def test_apps_with_different_prefixes_see_nothing_of_each_other(self, new_app, serve, client_for):
        app_a, sse_a = new_app()
        other = new_prefix()
        ids_from_one(app_a.config["SSE_REDIS_URL"], other)
        app_b, sse_b = new_app(SSE_REDIS_PREFIX=other)
        server_a, server_b = serve(app_a), serve(app_b)
        client_a = client_for(server_a.port)
        client_b = client_for(server_b.port)

        assert sse_a.send_new_event(data="a1", id=True) == 1
        assert sse_b.send_new_event(data="b1", id=True) == 1
        assert sse_b.send_new_event(data="b2", id=True) == 2
        assert sse_a.send_new_event(data="a2", id=True) == 2

        assert [(m.id, m.data) for m in until_end(client_a, sse_a)] == [(1, "a1"), (2, "a2")]
        assert [(m.id, m.data) for m in until_end(client_b, sse_b)] == [(1, "b1"), (2, "b2")]
        assert [e.data for e in sse_a.messages.values()] == ["a1", "a2"]
        assert [e.data for e in sse_b.messages.values()] == ["b1", "b2"]

    def test_apps_with_the_same_prefix_share_ids_store_and_events(self, new_app, serve, client_for):
        # Two apps in this process, as two workers (or hosts) on one Redis.
        app_a, sse_a = new_app()
        app_b, sse_b = new_app()
        server_a, server_b = serve(app_a), serve(app_b)
        on_a = client_for(server_a.port, "/stream?channel=room")
        on_b = client_for(server_b.port, "/stream?channel=room")

        sent = [
            sse_a.send_new_event(data="from a", id=True, channel="room"),
            sse_b.send_new_event(data="from b", id=True, channel="room"),
            sse_b.send_new_event(data="live from b", channel="room"),
            sse_a.send_new_event(data="again a", id=True, channel="room"),
        ]

        assert sent == [1, 2, None, 3]
        expected = [(1, "from a"), (2, "from b"), (None, "live from b"), (3, "again a")]
        assert [(m.id, m.data) for m in until_end(on_a, sse_a, "room")] == expected
        assert [(m.id, m.data) for m in until_end(on_b, sse_a, "room")] == expected
        history = [(id, e.data) for id, e in sse_a.history("room").items()]
        assert history == [(1, "from a"), (2, "from b"), (3, "again a")]
        assert [(id, e.data) for id, e in sse_b.history("room").items()] == history
        late_on_b = client_for(server_b.port, "/stream?channel=room", {"Last-Event-ID": "1"})
        assert [(m.id, m.data) for m in until_end(late_on_b, sse_a, "room")] == [(2, "from b"), (3, "again a")]

    def test_redis_keys_are_all_under_the_prefix(self, own_redis, make_app, serve, client_for, subscribe):
        ids_from_one(own_redis.url, "myapp")
        app, sse = make_app(
            SSE_REDIS_URL=own_redis.url,
            SSE_REDIS_PREFIX="myapp",
            SSE_MAX_HISTORY=2,
            SSE_HISTORY_TTL=60,
            SSE_REDIS_SUBSCRIBE=subscribe,
        )
        try:
            server = serve(app)
            client = client_for(server.port, "/stream?channel=a&channel=b%3Ac")
            send_to(sse, ["a", "a", "a", "b:c"])
            sse.send_new_event(data="live", channel="d")
            assert ids_of(until_end(client, sse, "a")) == [1, 2, 3, 4]

            with own_redis.client() as redis_client:
                keys = sorted(key.decode() for key in redis_client.scan_iter(count=1000))
                channels = [name.decode() for name in redis_client.pubsub_channels()]
        finally:
            sse.close()

        assert keys, "nothing was stored in Redis"
        assert [key for key in keys if not key.startswith("{myapp}:")] == []
        assert {"{myapp}:id", "{myapp}:store:a", "{myapp}:store:b:c"} <= set(keys)
        if subscribe == "channels":
            assert sorted(channels) == ["{myapp}:c:a", "{myapp}:c:b:c", "{myapp}:control"]
        else:
            assert channels == ["{myapp}:events"]

    def test_redis_connections_do_not_grow_with_the_number_of_streams(
        self, own_redis, make_app, serve, client_for, subscribe
    ):
        app, sse = make_app(SSE_REDIS_URL=own_redis.url, SSE_KEEPALIVE=30, SSE_REDIS_SUBSCRIBE=subscribe)
        try:
            server = serve(app)
            with own_redis.client() as redis_client:
                first = client_for(server.port)
                sse.send_new_event(data="one", id=True)
                assert first.next_event(5).data == "one"
                with_one = connections_of(redis_client)

                more: list[Any] = []
                openers = [
                    threading.Thread(
                        target=lambda n=n: more.append(client_for(server.port, f"/stream?channel=c{n % 5}"))
                    )
                    for n in range(50)
                ]
                for thread in openers:
                    thread.start()
                for thread in openers:
                    thread.join(10)
                assert len(sse.connections) == 51
                sse.send_new_event(data="two", id=True)
                for n in range(5):
                    sse.send_new_event(data="to c", channel=f"c{n}")
                assert first.next_event(5).data == "two"
                assert all(client.next_event(5).data == "to c" for client in more)
                with_fifty_one = connections_of(redis_client)
        finally:
            sse.close()

        subscribers = [entry for entry in with_one if int(entry["sub"]) or int(entry["psub"])]
        assert len(subscribers) == 1, with_one
        assert len(with_one) <= 4, with_one  # one subscription and a few pooled connections
        assert len(with_fifty_one) <= POOL_SIZE, (with_one, with_fifty_one)  # the pool's bound, whatever the streams
        assert sum(1 for entry in with_fifty_one if int(entry["sub"]) or int(entry["psub"])) == 1

    def test_store_survives_the_app_for_a_restarted_worker(self, new_app, serve, client_for):
        first_app, first_sse = new_app(SSE_MAX_HISTORY=10)
        send_to(first_sse, ["sse", "a", "sse"])
        first_sse.close()
        del first_app, first_sse

        app, sse = new_app(SSE_MAX_HISTORY=10)  # same URL and prefix
        server = serve(app)
        client = client_for(server.port, "/stream?channel=sse&channel=a", {"Last-Event-ID": "1"})

        assert [(id, e.data) for id, e in sse.messages.items()] == [(1, "sse1"), (3, "sse3")]
        assert sse.send_new_event(data="next", id=True) == 4
        assert [(m.id, m.data) for m in until_end(client, sse)] == [(2, "a2"), (3, "sse3"), (4, "next")]

    def test_streams_opening_together_share_reads_of_the_store(self, own_redis, new_app, serve):
        app, sse = new_app(SSE_REDIS_URL=own_redis.url)
        server = serve(app)
        for number in range(1, 51):
            sse.send_new_event(data=f"e{number}", id=True)
        redis_client = own_redis.client()
        lranges_before = redis_client.info("commandstats").get("cmdstat_lrange", {}).get("calls", 0)

        # 100 browsers arrive at once: every request is on the wire before
        # the server reads the first.
        sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
        for sock in sockets:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\nLast-Event-ID: 0\r\n\r\n")
        for sock in sockets:
            sock.settimeout(10)
            received = b""
            while b"data: e50\n" not in received:
                data = sock.recv(65536)
                assert data, f"the stream ended early: {received[-300:]!r}"
                received += data
            assert received.count(b"data: e") == 50  # the whole store, each event once
            sock.close()

        lranges = redis_client.info("commandstats")["cmdstat_lrange"]["calls"] - lranges_before
        redis_client.close()
        assert lranges < 50, f"{lranges} reads of the store for 100 streams"
