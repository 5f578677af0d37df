"""Replay of the store on connect (SPEC 2): Last-Event-ID, reset, exactly once across replay and live."""

from __future__ import annotations

import pytest

from flask_sse_stream.core import core_of
from tests.support.streams import until_end
from tests.support.waiting import wait_until


def store(sse, count: int, channel: str = "sse", prefix: str = "e") -> list[int]:
    """Send ``count`` id'd events; their data is ``prefix`` + their id."""
    ids = []
    for _ in range(count):
        ids.append(sse.send_new_event(data=f"{prefix}{len(ids) + 1}", id=True, channel=channel))
    return ids


def ids_of(messages) -> list[int | None]:
    return [message.id for message in messages]


def is_reset(message, name: str = "sse-reset") -> bool:
    return message.event == name


def utf8_on_the_wire(text: str) -> str:
    """A header value whose latin-1 encoding (what the client writes) is ``text`` in UTF-8."""
    return text.encode("utf-8").decode("latin-1")


# -- replay -------------------------------------------------------------------


def test_new_client_gets_the_stored_events_then_live_ones(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    assert store(sse, 3) == [1, 2, 3]

    client = client_for(server.port)
    replayed = client.events(3, timeout=2)
    sse.send_new_event(data="live", id=True)

    assert [(m.id, m.data, m.event) for m in replayed] == [
        (1, "e1", "message"),
        (2, "e2", "message"),
        (3, "e3", "message"),
    ]
    assert [(m.id, m.data) for m in until_end(client, sse)] == [(4, "live")]


def test_last_event_id_header_replays_only_later_ids(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    store(sse, 5)

    client = client_for(server.port, "/stream", {"Last-Event-ID": "2"})

    messages = until_end(client, sse)
    assert [(m.id, m.data) for m in messages] == [(3, "e3"), (4, "e4"), (5, "e5")]


def test_last_event_id_query_parameter_replays_only_later_ids(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    store(sse, 5)

    client = client_for(server.port, "/stream?lastEventId=2")

    assert ids_of(until_end(client, sse)) == [3, 4, 5]


def test_resume_from_the_last_id_replays_nothing_but_gets_live_events(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    store(sse, 3)

    client = client_for(server.port, "/stream", {"Last-Event-ID": "3"})
    sse.send_new_event(data="next", id=True)

    assert [(m.id, m.data) for m in until_end(client, sse)] == [(4, "next")]


def test_last_event_id_zero_replays_the_whole_store(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    store(sse, 3)

    client = client_for(server.port, "/stream", {"Last-Event-ID": "0"})

    assert ids_of(until_end(client, sse)) == [1, 2, 3]


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        ("3", "1", [4, 5]),
        ("1", "3", [2, 3, 4, 5]),
        ("abc", "3", [1, 2, 3, 4, 5]),
        ("-1", "4", [1, 2, 3, 4, 5]),
        ("9" * 30, "4", [1, 2, 3, 4, 5]),
        ("", "4", [1, 2, 3, 4, 5]),
    ],
    ids=[
        "header-3-query-1",
        "header-1-query-3",
        "garbage-header",
        "negative-header",
        "overlong-header",
        "empty-header",
    ],
)
def test_last_event_id_header_wins_over_the_query_parameter(make_app, serve, client_for, header, query, expected):
    app, sse = make_app()
    server = serve(app)
    store(sse, 5)

    client = client_for(server.port, f"/stream?lastEventId={query}", {"Last-Event-ID": header})

    assert client.status == 200
    messages = until_end(client, sse)
    assert not any(is_reset(m) for m in messages)
    assert ids_of(messages) == expected


GARBAGE_HEADERS = {
    "letters": "abc",
    "negative": "-1",
    "decimal": "1.5",
    "plus": "+1",
    "hex": "0x1",
    "exponent": "1e2",
    "arabic-indic-digit": utf8_on_the_wire("\u0663"),
    "fullwidth-digit": utf8_on_the_wire("\uff11"),
    "2**80-25-digits": str(2**80),
    "21-digits": "1" * 21,
    "10kb-digits": "1" * 10240,
    "10kb-letters": "x" * 10240,
    "digits-then-letter": "2a",
}


@pytest.mark.parametrize("value", list(GARBAGE_HEADERS.values()), ids=list(GARBAGE_HEADERS))
def test_garbage_last_event_id_header_is_ignored(make_app, serve, client_for, value):
    app, sse = make_app()
    server = serve(app)
    store(sse, 3)

    client = client_for(server.port, "/stream", {"Last-Event-ID": value})

    assert client.status == 200, client.body(timeout=2)[:200]
    messages = until_end(client, sse)
    assert not any(is_reset(m) for m in messages)
    assert [(m.id, m.data) for m in messages] == [(1, "e1"), (2, "e2"), (3, "e3")]


GARBAGE_QUERIES = {
    "letters": "abc",
    "negative": "-1",
    "decimal": "1.5",
    "leading-space": "%201",
    "plus-is-space": "+1",
    "trailing-space": "1%20",
    "nul": "1%00",
    "empty": "",
    "arabic-indic-digit": "%D9%A3",
    "2**80-25-digits": str(2**80),
    "7000-digits": "1" * 7000,
}


@pytest.mark.parametrize("value", list(GARBAGE_QUERIES.values()), ids=list(GARBAGE_QUERIES))
def test_garbage_last_event_id_query_parameter_is_ignored(make_app, serve, client_for, value):
    app, sse = make_app()
    server = serve(app)
    store(sse, 3)

    client = client_for(server.port, f"/stream?lastEventId={value}")

    assert client.status == 200, client.body(timeout=2)[:200]
    messages = until_end(client, sse)
    assert not any(is_reset(m) for m in messages)
    assert ids_of(messages) == [1, 2, 3]


def test_live_only_events_are_delivered_live_but_not_replayed(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    early = client_for(server.port)
    assert sse.send_new_event(data="live-1") is None
    assert sse.send_new_event(data="stored", id=True) == 1
    assert sse.send_new_event(data="live-2") is None

    late = client_for(server.port)

    assert [(m.id, m.data) for m in until_end(early, sse)] == [(None, "live-1"), (1, "stored"), (None, "live-2")]
    assert [(m.id, m.data) for m in until_end(late, sse)] == [(1, "stored")]
    assert list(sse.messages) == [1]


# -- several channels -----------------------------------------------------------


def send_to(sse, plan: list[str]) -> None:
    """Send one id'd event per channel in ``plan``; its data is ``<channel><id>``."""
    for number, channel in enumerate(plan, start=1):
        assert sse.send_new_event(data=f"{channel}{number}", id=True, channel=channel) == number


def test_multi_channel_stream_replays_its_channels_merged_in_id_order(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    send_to(sse, ["b", "a", "c", "a", "b", "c", "b"])

    client = client_for(server.port, "/stream?channel=a&channel=b")

    messages = until_end(client, sse, channel="a")
    assert [(m.id, m.data) for m in messages] == [(1, "b1"), (2, "a2"), (4, "a4"), (5, "b5"), (7, "b7")]


def test_multi_channel_stream_resumes_across_channels(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    send_to(sse, ["b", "a", "c", "a", "b", "c", "b"])

    client = client_for(server.port, "/stream?channel=b&channel=a", {"Last-Event-ID": "2"})

    assert ids_of(until_end(client, sse, channel="b")) == [4, 5, 7]


def test_multi_channel_stream_receives_live_events_of_its_channels_only_in_order(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream?channel=a&channel=b")

    send_to(sse, ["a", "c", "b", "b", "c", "a"])
    sse.send_new_event(data="live-c", channel="c")
    sse.send_new_event(data="live-b", channel="b")

    messages = until_end(client, sse, channel="a")
    assert [(m.id, m.data) for m in messages] == [(1, "a1"), (3, "b3"), (4, "b4"), (6, "a6"), (None, "live-b")]


def test_repeated_channel_name_delivers_each_event_once(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    send_to(sse, ["a", "b", "a"])

    client = client_for(server.port, "/stream?channel=a&channel=b&channel=a&channel=a")
    assert sse.connections[0].channels == ("a", "b")
    sse.send_new_event(data="live-a", id=True, channel="a")

    messages = until_end(client, sse, channel="a")
    assert [(m.id, m.data) for m in messages] == [(1, "a1"), (2, "b2"), (3, "a3"), (4, "live-a")]


def test_event_of_another_channel_is_not_replayed(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    send_to(sse, ["c", "c", "a"])

    client = client_for(server.port, "/stream?channel=a&channel=b")

    assert ids_of(until_end(client, sse, channel="b")) == [3]


# -- reset ----------------------------------------------------------------------


def assert_reset(message, name: str = "sse-reset") -> None:
    assert message.event == name
    assert message.data == ""
    assert not any(line.startswith("id") for line in message.lines), message.lines
    assert message.last_event_id == ""


@pytest.mark.parametrize("resume", [1, 2])
def test_resume_from_before_evicted_events_sends_reset_then_the_store(make_app, serve, client_for, resume):
    app, sse = make_app(SSE_MAX_HISTORY=3)
    server = serve(app)
    store(sse, 6)
    assert list(sse.history()) == [4, 5, 6]

    client = client_for(server.port, "/stream", {"Last-Event-ID": str(resume)})

    reset, *rest = until_end(client, sse)
    assert_reset(reset)
    assert [(m.id, m.data) for m in rest] == [(4, "e4"), (5, "e5"), (6, "e6")]


@pytest.mark.parametrize(("resume", "expected"), [(3, [4, 5, 6]), (4, [5, 6]), (6, [])])
def test_resume_with_nothing_evicted_after_it_sends_no_reset(make_app, serve, client_for, resume, expected):
    app, sse = make_app(SSE_MAX_HISTORY=3)
    server = serve(app)
    store(sse, 6)

    client = client_for(server.port, "/stream", {"Last-Event-ID": str(resume)})

    messages = until_end(client, sse)
    assert not any(is_reset(m) for m in messages)
    assert ids_of(messages) == expected


def test_reset_event_name_is_configurable(make_app, serve, client_for):
    app, sse = make_app(SSE_MAX_HISTORY=2, SSE_RESET_EVENT="reload-state")
    server = serve(app)
    store(sse, 5)

    client = client_for(server.port, "/stream?lastEventId=1")

    reset, *rest = until_end(client, sse)
    assert_reset(reset, "reload-state")
    assert ids_of(rest) == [4, 5]
    assert not any(is_reset(m) for m in rest)


def test_reset_on_a_multi_channel_stream_when_one_channel_evicted_after_the_resume_point(make_app, serve, client_for):
    app, sse = make_app(SSE_MAX_HISTORY=2)
    server = serve(app)
    send_to(sse, ["a", "a", "a", "a", "b"])  # a keeps 3, 4; 1 and 2 are evicted

    evicted_after = client_for(server.port, "/stream?channel=b&channel=a", {"Last-Event-ID": "1"})
    kept_after = client_for(server.port, "/stream?channel=b&channel=a", {"Last-Event-ID": "2"})

    reset, *rest = until_end(evicted_after, sse, channel="b")
    assert_reset(reset)
    assert ids_of(rest) == [3, 4, 5]
    kept = until_end(kept_after, sse, channel="b")
    assert not any(is_reset(m) for m in kept)
    assert ids_of(kept) == [3, 4, 5]


@pytest.mark.parametrize("resume", ["4", "1000", "9" * 20])
def test_resume_from_an_id_never_given_sends_reset_then_the_whole_store(make_app, serve, client_for, resume):
    app, sse = make_app()
    server = serve(app)
    store(sse, 3)

    client = client_for(server.port, "/stream", {"Last-Event-ID": resume})

    assert client.status == 200
    reset, *rest = until_end(client, sse)
    assert_reset(reset)
    assert [(m.id, m.data) for m in rest] == [(1, "e1"), (2, "e2"), (3, "e3")]


def test_resume_on_a_fresh_server_sends_reset_and_then_live_events(make_app, serve, client_for):
    # As after a restart of the in-process store: the browser resumes from an id of the old one.
    app, sse = make_app()
    server = serve(app)

    client = client_for(server.port, "/stream?lastEventId=42")
    sse.send_new_event(data="first", id=True)

    reset, *rest = until_end(client, sse)
    assert_reset(reset)
    assert [(m.id, m.data) for m in rest] == [(1, "first")]


def test_resume_after_ttl_expiry_sends_reset_then_what_is_left(make_app, serve, client_for):
    app, sse = make_app(SSE_HISTORY_TTL=0.3)
    server = serve(app)
    store(sse, 2)
    wait_until(lambda: sse.history() == {}, what="the stored events to expire")
    assert sse.send_new_event(data="fresh", id=True) == 3

    expired_after = client_for(server.port, "/stream", {"Last-Event-ID": "1"})
    nothing_lost = client_for(server.port, "/stream", {"Last-Event-ID": "2"})

    reset, *rest = until_end(expired_after, sse)
    assert_reset(reset)
    assert [(m.id, m.data) for m in rest] == [(3, "fresh")]
    kept = until_end(nothing_lost, sse)
    assert [(m.id, m.data, m.event) for m in kept] == [(3, "fresh", "message")]


@pytest.mark.parametrize("resume", ["2", "5", "100"])
def test_without_history_nothing_is_replayed_and_no_reset_is_sent(make_app, serve, client_for, resume):
    app, sse = make_app(SSE_MAX_HISTORY=0)
    server = serve(app)
    assert store(sse, 5) == [1, 2, 3, 4, 5]
    assert sse.history() == {}

    client = client_for(server.port, "/stream", {"Last-Event-ID": resume})
    fresh = client_for(server.port)
    sse.send_new_event(data="live", id=True)

    assert [(m.id, m.data, m.event) for m in until_end(client, sse)] == [(6, "live", "message")]
    assert [(m.id, m.data, m.event) for m in until_end(fresh, sse)] == [(6, "live", "message")]


# -- exactly once across the replay/live boundary -----------------------------------


@pytest.fixture
def send_during_replay(monkeypatch):
    """``send_during_replay(sse, app, *sends, after_read=False)``: a race made deterministic.

    Each stream's replay sends ``sends`` (kwargs of ``send_new_event``) before
    it reads the store, or with ``after_read=True`` right after it (before the
    stream has written anything).
    """

    def install(sse, app, *sends: dict, after_read: bool = False) -> list:
        backend = core_of(app).backend
        original = backend.read_store
        sent = []

        def replay_with_a_race(channels, after=None):
            if after_read:
                replay = original(channels, after)
            for kwargs in sends:
                sent.append(sse.send_new_event(**kwargs))
            return replay if after_read else original(channels, after)

        monkeypatch.setattr(backend, "read_store", replay_with_a_race)
        return sent

    return install


@pytest.mark.parametrize(
    ("stored", "headers", "expected"),
    [
        (0, {}, [(1, "during"), (2, "after")]),
        (2, {}, [(1, "e1"), (2, "e2"), (3, "during"), (4, "after")]),
        (3, {"Last-Event-ID": "1"}, [(2, "e2"), (3, "e3"), (4, "during"), (5, "after")]),
        (3, {"Last-Event-ID": "3"}, [(4, "during"), (5, "after")]),
    ],
    ids=["empty-store", "whole-store", "resume-mid-store", "resume-at-end"],
)
def test_event_sent_while_replay_is_prepared_arrives_once_in_order(
    make_app, serve, client_for, send_during_replay, stored, headers, expected
):
    app, sse = make_app()
    server = serve(app)
    store(sse, stored)
    sent = send_during_replay(sse, app, {"data": "during", "id": True})

    client = client_for(server.port, "/stream", headers)
    assert sent == [stored + 1]
    sse.send_new_event(data="after", id=True)

    assert [(m.id, m.data) for m in until_end(client, sse)] == expected


@pytest.mark.parametrize(
    ("stored", "headers", "expected"),
    [
        (0, {}, [(1, "during"), (2, "after")]),
        (2, {}, [(1, "e1"), (2, "e2"), (3, "during"), (4, "after")]),
        (3, {"Last-Event-ID": "2"}, [(3, "e3"), (4, "during"), (5, "after")]),
    ],
    ids=["empty-store", "whole-store", "resume-mid-store"],
)
def test_event_sent_just_after_the_store_is_read_arrives_once_in_order(
    make_app, serve, client_for, send_during_replay, stored, headers, expected
):
    app, sse = make_app()
    server = serve(app)
    store(sse, stored)
    sent = send_during_replay(sse, app, {"data": "during", "id": True}, after_read=True)

    client = client_for(server.port, "/stream", headers)
    assert sent == [stored + 1]
    sse.send_new_event(data="after", id=True)

    assert [(m.id, m.data) for m in until_end(client, sse)] == expected


def test_live_only_event_sent_while_replay_is_prepared_arrives_once_after_the_replay(
    make_app, serve, client_for, send_during_replay
):
    app, sse = make_app()
    server = serve(app)
    store(sse, 2)
    send_during_replay(sse, app, {"data": "during", "id": True}, {"data": "live-during"})

    client = client_for(server.port)
    sse.send_new_event(data="after", id=True)

    messages = until_end(client, sse)
    assert [(m.id, m.data) for m in messages] == [
        (1, "e1"),
        (2, "e2"),
        (3, "during"),
        (None, "live-during"),
        (4, "after"),
    ]


def test_events_sent_to_several_channels_while_replay_is_prepared_arrive_once(
    make_app, serve, client_for, send_during_replay
):
    app, sse = make_app()
    server = serve(app)
    send_to(sse, ["a", "b"])
    send_during_replay(
        sse,
        app,
        {"data": "b-during", "id": True, "channel": "b"},
        {"data": "c-during", "id": True, "channel": "c"},
        {"data": "a-during", "id": True, "channel": "a"},
    )

    client = client_for(server.port, "/stream?channel=a&channel=b")
    sse.send_new_event(data="b-after", id=True, channel="b")

    messages = until_end(client, sse, channel="a")
    assert [(m.id, m.data) for m in messages] == [
        (1, "a1"),
        (2, "b2"),
        (3, "b-during"),
        (5, "a-during"),
        (6, "b-after"),
    ]
