"""``POST <prefix>/publish`` and ``GET <prefix>/stats``: token, body checks, statuses, delivery."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, url_for

from flask_sse_stream import SSE
from flask_sse_stream.core import core_of
from flask_sse_stream.endpoints import MAX_BODY
from tests.support.redis_server import RedisServer
from tests.support.streams import until_end

TOKEN = "publish-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.raw = response.read()

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.raw)


def call(
    port: int,
    path: str = "/stream/publish",
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    raw: bytes | Iterator[bytes] | None = None,
) -> Answer:
    """One request on a fresh connection; ``body`` is sent as JSON, ``raw`` as is (an iterator: chunked)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else raw
        all_headers = {**(JSON if body is not None else {}), **(headers or {})}
        connection.request(method, path, body=payload, headers=all_headers, encode_chunked=isinstance(raw, Iterator))
        return Answer(connection.getresponse())
    finally:
        connection.close()


def publish(port: int, body: Any, path: str = "/stream/publish") -> Answer:
    return call(port, path, body, AUTH)


@pytest.fixture
def served(make_app, serve) -> tuple[Flask, SSE, int]:
    app, sse = make_app(SSE_PUBLISH_TOKEN=TOKEN)
    return app, sse, serve(app).port


# -- off by default ---------------------------------------------------------------------


def test_without_a_token_there_is_no_publish_or_stats_endpoint(make_app, serve, client_for) -> None:
    app, sse = make_app()
    port = serve(app).port
    assert app.config["SSE_PUBLISH_TOKEN"] is None
    assert call(port, body={"data": "x"}, headers=AUTH).status == 404
    assert call(port, "/stream/stats", headers=AUTH, method="GET").status == 404
    assert client_for(port).status == 200  # the stream is where it was
    assert sse.stats["events_sent"] == 0


@pytest.mark.parametrize(
    "value, error",
    [
        ("short-token", ValueError),
        ("a token with spaces in it", ValueError),
        ("tökenwithnonascii-123", ValueError),
        ("", ValueError),
        (b"bytes-token-0123456789", TypeError),
        (12345678901234567890, TypeError),
    ],
)
def test_an_unusable_token_is_refused_without_showing_it(value: Any, error: type[Exception]) -> None:
    app = Flask(__name__)
    app.config["SSE_PUBLISH_TOKEN"] = value
    with pytest.raises(error, match="SSE_PUBLISH_TOKEN must be None .* at least 16") as caught:
        SSE(app)
    secret = value.decode() if isinstance(value, bytes) else str(value)
    if secret:
        assert secret not in str(caught.value)


def test_the_token_is_not_in_the_repr_of_the_settings(served) -> None:
    app, _, _ = served
    assert TOKEN not in repr(core_of(app).settings)


# -- the token --------------------------------------------------------------------------


def test_a_request_without_a_token_is_401_with_a_bearer_challenge(served) -> None:
    _, sse, port = served
    answer = call(port, body={"data": "x"})
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert "Authorization: Bearer" in answer.json()["error"]
    assert sse.stats["events_sent"] == 0


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-0123456789",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        "Bearer",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN.upper()}",
    ],
)
def test_a_wrong_token_is_401_and_sends_nothing(served, client_for, authorization: str) -> None:
    _, sse, port = served
    client = client_for(port)
    answer = call(port, body={"data": "x"}, headers={"Authorization": authorization})
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="flask_sse_stream", error="invalid_token"'
    assert TOKEN not in answer.raw.decode()
    assert until_end(client, sse) == []


def test_the_scheme_of_the_authorization_header_is_case_insensitive(served) -> None:
    _, _, port = served
    assert call(port, body={"data": "x"}, headers={"Authorization": f"bearer {TOKEN}"}).status == 200


# -- sending ----------------------------------------------------------------------------


def test_a_published_event_reaches_a_stream_with_every_field(served, client_for) -> None:
    _, sse, port = served
    client = client_for(port, "/stream?channel=news")
    answer = publish(port, {"data": {"n": 1}, "event": "update", "id": True, "retry": 3000, "channel": "news"})
    assert (answer.status, answer.json()) == (200, {"id": 1})
    message = client.next_event()
    assert (message.data, message.event, message.id, client.retry) == ('{"n": 1}', "update", 1, 3000)
    assert sse.history("news")[1].data == {"n": 1}


def test_a_live_only_event_answers_id_null_and_is_not_stored(served, client_for) -> None:
    _, sse, port = served
    client = client_for(port)
    answer = publish(port, {"data": "line one\nline two"})
    assert (answer.status, answer.json()) == (200, {"id": None})
    message = client.next_event()
    assert (message.data, message.id) == ("line one\nline two", None)
    assert sse.messages == {}


def test_every_field_is_optional(served, client_for) -> None:
    _, sse, port = served
    client = client_for(port)
    assert publish(port, {}).json() == {"id": None}
    assert publish(port, {"data": None, "event": None, "retry": None, "id": False}).json() == {"id": None}
    assert sse.stats["events_sent"] == 2
    assert until_end(client, sse) == []  # no data line: nothing a browser would dispatch


def test_ids_from_the_endpoint_and_from_send_new_event_share_one_counter(served) -> None:
    _, sse, port = served
    assert sse.send_new_event(data="a", id=True) == 1
    assert publish(port, {"data": "b", "id": True, "channel": "other"}).json() == {"id": 2}
    assert sse.send_new_event(data="c", id=True) == 3


def test_a_body_of_exactly_the_limit_is_accepted(served) -> None:
    _, _, port = served
    body = b'{"data": "' + b"x" * (MAX_BODY - 12) + b'"}'
    assert len(body) == MAX_BODY
    assert call(port, raw=body, headers={**AUTH, **JSON}).status == 200


def test_a_chunked_body_is_read(served, client_for) -> None:
    _, _, port = served
    client = client_for(port)
    answer = call(port, raw=iter([b'{"data":', b' "chunked"}']), headers={**AUTH, **JSON})
    assert answer.status == 200
    assert client.next_event().data == "chunked"


# -- invalid bodies ---------------------------------------------------------------------


INVALID_FIELDS = [
    ({"event": ""}, "event", "non-empty str"),
    ({"event": "a\nb"}, "event", "without CR, LF"),
    ({"event": 5}, "event", "must be a str"),
    ({"id": 1}, "id", "JSON boolean"),
    ({"id": "true"}, "id", "JSON boolean"),
    ({"id": None}, "id", "JSON boolean"),
    ({"retry": -1}, "retry", "positive int"),
    ({"retry": 1.5}, "retry", "positive int"),
    ({"retry": True}, "retry", "positive int"),
    ({"retry": "3000"}, "retry", "positive int"),
    ({"channel": ""}, "channel", "1 to 200 characters"),
    ({"channel": "a\x00b"}, "channel", "no control characters"),
    ({"channel": "x" * 201}, "channel", "1 to 200 characters"),
    ({"channel": 7}, "channel", "must be a str"),
    ({"channel": None}, "channel", "must be a str"),
    ({"data": "x", "colour": "red"}, "colour", "unknown field 'colour'"),
]


@pytest.mark.parametrize("body, field, accepted", INVALID_FIELDS, ids=[repr(b)[:40] for b, _, _ in INVALID_FIELDS])
def test_an_invalid_field_is_400_naming_it_and_sends_nothing(served, client_for, body, field, accepted) -> None:
    _, sse, port = served
    client = client_for(port)
    answer = publish(port, {"data": "x", **body})
    assert answer.status == 400
    error = answer.json()
    assert error["field"] == field
    assert error["error"].startswith(field) or f"'{field}'" in error["error"]
    assert accepted in error["error"]
    assert sse.stats["events_sent"] == 0
    assert until_end(client, sse) == []


def test_data_that_json_cannot_carry_is_400_naming_data(served) -> None:
    _, _, port = served
    answer = call(port, raw=b'{"data": 1e400}', headers={**AUTH, **JSON})  # Python reads it as inf
    assert answer.status == 400
    assert answer.json()["field"] == "data"
    assert "JSON-serialisable" in answer.json()["error"]


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"data=hello", "not JSON"),
        (b'{"data": NaN}', "NaN is not JSON"),
        (b'{"data": "\xff"}', "UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b"1" * 5000, "not JSON"),
        (b'["data", "x"]', 'got ["data", "x"]'),
        (b'"hello"', 'got "hello"'),
        (b"null", "got null"),
        (b"42", "got 42"),
    ],
    ids=["empty", "truncated", "form", "nan", "not-utf8", "deep", "huge-int", "list", "string", "null", "number"],
)
def test_a_body_that_is_not_a_json_object_is_400(served, raw: bytes, says: str) -> None:
    _, sse, port = served
    answer = call(port, raw=raw, headers={**AUTH, **JSON})
    assert answer.status == 400
    assert "the body must be a JSON object" in answer.json()["error"]
    assert says in answer.json()["error"]
    assert sse.stats["events_sent"] == 0


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
def test_a_body_of_another_content_type_is_415(served, content_type: str) -> None:
    _, _, port = served
    answer = call(port, raw=b'{"data": "x"}', headers={**AUTH, "Content-Type": content_type})
    assert answer.status == 415
    assert "application/json" in answer.json()["error"] and content_type in answer.json()["error"]


def test_json_content_types_with_a_charset_or_a_suffix_are_accepted(served) -> None:
    _, _, port = served
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        assert call(port, raw=b'{"data": "x"}', headers={**AUTH, "Content-Type": content_type}).status == 200


def test_a_body_over_the_limit_is_413_by_content_length(served) -> None:
    _, sse, port = served
    answer = call(port, raw=b'{"data": "' + b"x" * MAX_BODY + b'"}', headers={**AUTH, **JSON})
    assert answer.status == 413
    assert str(MAX_BODY) in answer.json()["error"]
    assert sse.stats["events_sent"] == 0


def test_a_chunked_body_over_the_limit_is_413(served) -> None:
    _, sse, port = served
    chunks = iter([b'{"data": "'] + [b"x" * 65536] * 17 + [b'"}'])
    answer = call(port, raw=chunks, headers={**AUTH, **JSON})
    assert answer.status == 413
    assert sse.stats["events_sent"] == 0


# -- methods, CORS, routes --------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_publish_are_405_with_allow(served, method: str) -> None:
    _, _, port = served
    answer = call(port, method=method, headers=AUTH)
    assert answer.status == 405
    assert answer.headers["allow"] == "POST, OPTIONS"
    assert method in answer.json()["error"]


def test_no_cors_headers_even_where_the_stream_allows_every_origin(make_app, serve) -> None:
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN, SSE_CORS_ORIGINS="*")
    port = serve(app).port
    origin = {"Origin": "https://elsewhere.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    answers = [
        call(port, method="OPTIONS", headers=preflight),
        call(port, body={"data": "x"}, headers={**AUTH, **origin}),
        call(port, "/stream/stats", method="GET", headers={**AUTH, **origin}),
        call(port, body={"data": "x"}, headers=origin),
    ]
    assert [answer.status for answer in answers] == [204, 200, 200, 401]
    for answer in answers:
        assert not [name for name in answer.headers if name.startswith("access-control-")]
    assert "access-control-allow-origin" in call(port, "/stream", method="OPTIONS", headers=origin).headers


@pytest.mark.parametrize(
    "prefix, stream, endpoint", [("/", "/", "/publish"), ("/events/", "/events", "/events/publish")]
)
def test_the_endpoint_is_beside_the_stream_under_any_prefix(make_app, serve, client_for, prefix, stream, endpoint):
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN, SSE_URL_PREFIX=prefix)
    port = serve(app).port
    client = client_for(port, stream)
    assert (client.status, client.headers["content-type"]) == (200, "text/event-stream; charset=utf-8")
    assert publish(port, {"data": "here"}, endpoint).status == 200
    assert client.next_event().data == "here"
    with app.test_request_context():
        assert url_for("sse.publish") == endpoint
        assert url_for("sse.stream") == stream


# -- stats ------------------------------------------------------------------------------


def test_stats_answers_the_numbers_of_the_process_and_the_store_sizes(served, client_for) -> None:
    _, sse, port = served
    client_for(port, "/stream?channel=a").next_chunk()
    client_for(port, "/stream?channel=a&channel=b").next_chunk()
    sse.send_new_event(data="1", id=True, channel="a")
    sse.send_new_event(data="2", id=True, channel="a")
    answer = call(port, "/stream/stats?channel=a&channel=b&channel=sse", method="GET", headers=AUTH)
    assert answer.status == 200
    assert answer.headers["cache-control"] == "no-store"
    numbers = answer.json()
    assert numbers["streams"] == 2
    assert numbers["streams_by_channel"] == {"a": 2, "b": 1}
    assert numbers["stored"] == {"a": 2, "b": 0, "sse": 0}
    assert numbers["events_sent"] == 2
    assert isinstance(numbers["pid"], int)
    assert numbers.keys() >= sse.stats.keys()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_stats_without_a_channel_lists_every_channel_with_a_store(backend, make_app, serve, tmp_path) -> None:
    redis_server = RedisServer(tmp_path) if backend == "redis" else None
    try:
        config = {"SSE_REDIS_URL": redis_server.url} if redis_server else {}
        app, sse = make_app(SSE_PUBLISH_TOKEN=TOKEN, **config)
        for channel, count in (("b", 2), ("a", 1), ("sse", 3), ("ünï côdé", 1)):
            for n in range(count):
                sse.send_new_event(data=n, id=True, channel=channel)
        sse.send_new_event(data="live only", channel="nothing-stored")
        answer = call(serve(app).port, "/stream/stats", method="GET", headers=AUTH)
        assert answer.json()["stored"] == {"a": 1, "b": 2, "sse": 3, "ünï côdé": 1}
    finally:
        if redis_server is not None:
            redis_server.stop()


def test_stats_follows_the_token_rules_and_answers_get_only(served) -> None:
    _, _, port = served
    assert call(port, "/stream/stats", method="GET").status == 401
    assert call(port, "/stream/stats", method="GET", headers={"Authorization": "Bearer nope"}).status == 401
    assert call(port, "/stream/stats", method="HEAD", headers=AUTH).status == 200
    answer = call(port, "/stream/stats", body={}, headers=AUTH)
    assert (answer.status, answer.headers["allow"]) == (405, "GET, HEAD, OPTIONS")
    bad = call(port, "/stream/stats?channel=", method="GET", headers=AUTH)
    assert (bad.status, bad.json()["field"]) == (400, "channel")


# -- Redis ------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def test_publishing_through_one_app_reaches_a_stream_of_another_on_the_same_redis(
    redis_server, make_app, serve, client_for
) -> None:
    publisher, _ = make_app(SSE_REDIS_URL=redis_server.url, SSE_PUBLISH_TOKEN=TOKEN)
    streamer, other = make_app(SSE_REDIS_URL=redis_server.url)
    client = client_for(serve(streamer).port, "/stream?channel=news")
    answer = publish(serve(publisher).port, {"data": "via redis", "id": True, "channel": "news"})
    sent = answer.json()["id"]
    assert answer.json() == {"id": sent} and isinstance(sent, int), answer.json()
    with redis_server.client() as redis_client:
        assert int(redis_client.get("{sse}:id")) == sent  # given by the Redis counter (it starts at its clock)
    message = client.next_event()
    assert (message.data, message.id) == ("via redis", sent)
    assert other.history("news")[sent].data == "via redis"


def test_an_unreachable_store_is_503_with_retry_after(redis_server, make_app, serve) -> None:
    app, _ = make_app(SSE_REDIS_URL=redis_server.url, SSE_PUBLISH_TOKEN=TOKEN)
    port = serve(app).port
    assert publish(port, {"data": "before"}).status == 200
    redis_server.stop()
    answer = publish(port, {"data": "while down", "id": True})
    assert answer.status == 503
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["error"] == "the event store (Redis) is unavailable; try again later"
    stats = call(port, "/stream/stats", method="GET", headers=AUTH)
    assert (stats.status, "retry-after" in stats.headers) == (503, True)
