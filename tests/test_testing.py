"""``flask_sse_stream.testing``: streams read through Flask's test client, with no server and no hang."""

from __future__ import annotations

import pytest

from flask_sse_stream.testing import ReceivedEvent, open_stream
from tests.support.redis_server import RedisServer


def test_events_sent_after_opening_arrive_parsed(make_app) -> None:
    app, sse = make_app()
    with open_stream(app.test_client()) as stream:
        sse.send_new_event(data="a\nb")
        sse.send_new_event(data={"x": 1}, event="update", id=True, retry=3000)
        first, second = stream.events(2)
    assert first == ReceivedEvent("a\nb")
    assert second == ReceivedEvent('{"x": 1}', event="update", id=1, retry=3000)
    assert second.json() == {"x": 1}
    assert stream.last_event_id == "1"


def test_no_event_is_a_timeout_error_not_a_hang(make_app) -> None:
    app, _ = make_app()
    with open_stream(app.test_client()) as stream, pytest.raises(TimeoutError, match="no event within 0.1 s"):
        stream.next_event(timeout=0.1)


def test_closing_ends_the_stream_in_the_app(make_app) -> None:
    app, sse = make_app()
    stream = open_stream(app.test_client(), ["a", "b"])
    assert [c.channels for c in sse.connections] == [("a", "b")]
    stream.close()
    assert sse.connections == []


def test_a_stream_the_app_ends_is_an_eof_error(make_app) -> None:
    app, sse = make_app()
    with open_stream(app.test_client()) as stream:
        sse.close()
        with pytest.raises(EOFError):
            stream.next_event()


def test_resuming_gets_the_reset_event_and_the_store(make_app) -> None:
    app, sse = make_app(SSE_MAX_HISTORY=1, SSE_RETRY=2000)
    for data in ("one", "two", "three"):
        sse.send_new_event(data=data, id=True)
    client = app.test_client()
    with open_stream(client, last_event_id=0) as whole, open_stream(client, last_event_id=1) as gap:
        assert whole.next_event() == ReceivedEvent("three", id=3)
        assert gap.events(2) == [ReceivedEvent("", event="sse-reset"), ReceivedEvent("three", id=3)]
        assert gap.retry == 2000


def test_a_refused_stream_has_its_status_and_text(make_app) -> None:
    app, sse = make_app()
    sse.authorize(lambda channel: False)
    with open_stream(app.test_client(), "secret") as stream:
        assert stream.status_code == 403
        assert "'secret' is not open" in stream.text
        with pytest.raises(RuntimeError, match="refused with 403"):
            stream.next_event()


def test_it_works_with_the_redis_backend(tmp_path, make_app) -> None:
    redis_server = RedisServer(tmp_path)
    try:
        app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_URL_PREFIX="/events/")
        with open_stream(app.test_client(), "room") as stream:
            sent = sse.send_new_event(data="through Redis", channel="room", id=True)
            assert isinstance(sent, int), sent
            assert stream.next_event() == ReceivedEvent("through Redis", id=sent)
        sse.close()
    finally:
        redis_server.stop()
