"""Tests of the example app, with flask_sse_stream.testing: the example of docs/testing.rst."""

from __future__ import annotations

import pytest
from news_app import create_app

from flask_sse_stream.testing import open_stream


@pytest.fixture(params=["in-process", "redis"])
def app(request):
    if request.param == "in-process":
        yield create_app()
        return
    redis_url = request.getfixturevalue("redis_url")  # conftest.py: a Redis for the tests
    app = create_app(SSE_REDIS_URL=redis_url, SSE_REDIS_PREFIX=request.node.name)
    yield app
    app.sse.close()


def test_posted_news_reaches_an_open_stream(app):
    client = app.test_client()
    with open_stream(client, channel="news") as stream:
        answer = client.post("/news", data={"text": "Hello"})
        event = stream.next_event(timeout=2)
    assert (event.event, event.json(), event.id) == ("news", {"text": "Hello"}, answer.json["id"])


def test_a_stream_resuming_after_an_id_gets_what_followed(app):
    client = app.test_client()
    first = client.post("/news", data={"text": "one"}).json["id"]
    client.post("/news", data={"text": "two"})
    with open_stream(client, channel="news", last_event_id=first) as stream:
        assert [e.json()["text"] for e in stream.events(1)] == ["two"]
        with pytest.raises(TimeoutError):
            stream.next_event(timeout=0.2)  # nothing more was sent


def test_another_users_channel_is_refused(app):
    client = app.test_client()
    client.post("/login", data={"user": "ann"})
    with open_stream(client, channel="user-ann") as mine:
        assert mine.status_code == 200
    with open_stream(client, channel="user-bob") as other:
        assert other.status_code == 403
