"""The stream endpoint (SPEC 2, 5): headers, statuses, CORS and bad requests, on a real server."""

from __future__ import annotations

import time

import pytest
from flask import request

from tests.support.waiting import wait_until

STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}
ORIGIN = "https://app.example"
OTHER_ORIGIN = "https://evil.example"


def cors_headers_of(client) -> dict[str, str]:
    return {name: value for name, value in client.headers.items() if name.startswith("access-control-")}


# -- 200 --------------------------------------------------------------------


def test_stream_answers_200_with_exactly_the_event_stream_headers(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream", {"Accept-Encoding": "gzip, deflate, br"})

    assert client.status == 200
    for name, value in STREAM_HEADERS.items():
        assert client.headers.get(name) == value, name
    names = [name.lower() for name, _ in client.header_list]
    assert len(names) == len(set(names)), f"a header is repeated: {client.header_list}"
    assert "connection" not in client.headers
    assert "content-encoding" not in client.headers
    assert "content-length" not in client.headers
    assert client.headers.get("transfer-encoding") == "chunked"


def test_stream_opens_with_a_comment_before_any_event_is_sent(make_app, serve, client_for):
    app, sse = make_app(SSE_KEEPALIVE=30)
    server = serve(app)
    client = client_for(server.port)

    first = client.next_chunk(timeout=2)

    assert first is not None and first.startswith(b":"), first
    assert client.comments, "the opening comment line was not complete in the first write"
    assert client.pending_events() == []
    assert sse.history() == {}


def test_configured_retry_is_sent_at_the_start_of_the_stream(make_app, serve, client_for):
    app, sse = make_app(SSE_RETRY=3000, SSE_KEEPALIVE=30)
    server = serve(app)
    client = client_for(server.port)

    first = client.next_chunk(timeout=2)

    assert client.retry == 3000
    assert b"retry: 3000\n" in first
    assert client.pending_events() == []


def test_without_retry_setting_no_retry_field_is_sent(make_app, serve, client_for):
    app, sse = make_app(SSE_KEEPALIVE=30)
    server = serve(app)
    client = client_for(server.port)

    first = client.next_chunk(timeout=2)

    assert b"retry:" not in first
    assert client.retry is None


def test_idle_stream_gets_a_keepalive_comment_every_keepalive_interval(make_app, serve, client_for):
    app, sse = make_app(SSE_KEEPALIVE=0.2)
    server = serve(app)
    client = client_for(server.port)
    client.next_chunk(timeout=2)  # the opening comment
    opening_comments = len(client.comments)

    start = time.monotonic()
    for _ in range(4):
        chunk = client.next_chunk(timeout=2)
        assert chunk is not None, "the stream ended"
        assert chunk.startswith(b":"), chunk
    elapsed = time.monotonic() - start

    assert len(client.comments) - opening_comments == 4
    assert client.pending_events() == []
    # Four intervals of 0.2 s: not a flood of comments (a stall here can only delay them)...
    assert elapsed >= 0.6, elapsed
    # ...and not only one in a while.
    assert elapsed < 2.5, elapsed


def test_stream_lists_its_connection_while_open(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    before = time.time()
    client_for(server.port, "/stream?channel=news&channel=sport")

    [connection] = sse.connections
    assert connection.channels == ("news", "sport")
    assert connection.remote_addr == "127.0.0.1"
    assert before - 1 <= connection.started_at <= time.time() + 1


# -- methods ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_methods_other_than_get_head_options_get_405_with_allow(make_app, serve, client_for, method):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream", {"Content-Length": "0"}, method=method)

    assert client.status == 405
    allowed = {part.strip() for part in client.headers["allow"].split(",")}
    assert "GET" in allowed
    assert method not in allowed
    assert client.headers["content-type"] == "text/plain; charset=utf-8"
    assert f"{method} is not allowed" in client.body(timeout=2).decode()
    assert sse.connections == []


def test_head_answers_the_stream_headers_without_body_or_connection(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream", method="HEAD")

    assert client.status == 200
    for name, value in STREAM_HEADERS.items():
        assert client.headers.get(name) == value, name
    assert "connection" not in client.headers
    # A HEAD response has no body: the next bytes on the socket would be another response.
    client.sock.settimeout(0.3)
    try:
        extra = client.sock.recv(100)
    except TimeoutError:
        extra = b""
    assert extra == b""
    assert client._raw == b""
    assert sse.connections == []


def test_head_does_not_count_against_the_connection_limit(make_app, serve, client_for):
    app, sse = make_app(SSE_MAX_CONNECTIONS=1)
    server = serve(app)
    for _ in range(3):
        assert client_for(server.port, "/stream", method="HEAD").status == 200

    assert client_for(server.port).status == 200
    assert len(sse.connections) == 1


def test_preflight_from_allowed_origin_gets_204_with_cors_headers(make_app, serve, client_for):
    app, sse = make_app(SSE_CORS_ORIGINS=[ORIGIN])
    server = serve(app)
    client = client_for(
        server.port,
        "/stream?channel=news",
        {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
        method="OPTIONS",
    )

    assert client.status == 204
    assert client.headers.get("access-control-allow-origin") == ORIGIN
    assert client.headers.get("access-control-allow-credentials") == "true"
    assert client.headers.get("access-control-allow-methods") == "GET"
    assert client.headers.get("access-control-allow-headers") == "Last-Event-ID, Cache-Control"
    assert "origin" in client.headers.get("vary", "").lower()
    assert client.body(timeout=2) == b""
    assert sse.connections == []


def test_preflight_with_wildcard_cors_gets_204_without_credentials(make_app, serve, client_for):
    app, sse = make_app(SSE_CORS_ORIGINS="*")
    server = serve(app)
    client = client_for(
        server.port, "/stream", {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}, method="OPTIONS"
    )

    assert client.status == 204
    assert client.headers.get("access-control-allow-origin") == "*"
    assert client.headers.get("access-control-allow-methods") == "GET"
    assert client.headers.get("access-control-allow-headers") == "Last-Event-ID, Cache-Control"
    assert "access-control-allow-credentials" not in client.headers


@pytest.mark.parametrize("cors", [None, [ORIGIN]], ids=["cors-off", "origin-not-listed"])
def test_preflight_from_other_origin_gets_204_without_cors_headers(make_app, serve, client_for, cors):
    app, sse = make_app(SSE_CORS_ORIGINS=cors)
    server = serve(app)
    client = client_for(
        server.port, "/stream", {"Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "GET"}, method="OPTIONS"
    )

    assert client.status == 204
    assert cors_headers_of(client) == {}
    assert client.body(timeout=2) == b""


# -- CORS on the stream -------------------------------------------------------


def test_without_cors_setting_no_cors_headers_are_sent(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream", {"Origin": ORIGIN})

    assert client.status == 200
    assert cors_headers_of(client) == {}


def test_wildcard_cors_allows_any_origin_without_credentials(make_app, serve, client_for):
    app, sse = make_app(SSE_CORS_ORIGINS="*")
    server = serve(app)
    client = client_for(server.port, "/stream", {"Origin": OTHER_ORIGIN, "Cookie": "session=1"})

    assert client.status == 200
    assert client.headers.get("access-control-allow-origin") == "*"
    assert "access-control-allow-credentials" not in client.headers


def test_listed_origin_is_echoed_with_credentials_and_vary(make_app, serve, client_for):
    second = "http://localhost:8080"
    app, sse = make_app(SSE_CORS_ORIGINS=[ORIGIN, second])
    server = serve(app)
    client = client_for(server.port, "/stream", {"Origin": second})

    assert client.status == 200
    assert client.headers.get("access-control-allow-origin") == second
    assert client.headers.get("access-control-allow-credentials") == "true"
    assert "origin" in [part.strip().lower() for part in client.headers.get("vary", "").split(",")]
    for name, value in STREAM_HEADERS.items():
        assert client.headers.get(name) == value, name


@pytest.mark.parametrize(
    "origin",
    [OTHER_ORIGIN, ORIGIN + ".evil.example", ORIGIN.upper(), ORIGIN + "/", "null"],
)
def test_unlisted_origin_gets_no_allow_origin(make_app, serve, client_for, origin):
    app, sse = make_app(SSE_CORS_ORIGINS=[ORIGIN])
    server = serve(app)
    client = client_for(server.port, "/stream", {"Origin": origin})

    assert client.status == 200
    assert "access-control-allow-origin" not in client.headers
    assert "access-control-allow-credentials" not in client.headers


# -- bad requests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/stream?channel=", "channel"),
        ("/stream?channel=" + "c" * 201, "channel"),
        ("/stream?channel=a%00b", "channel"),
        ("/stream?channel=a%0Ab", "channel"),
        ("/stream?channel=a%0Db", "channel"),
        ("/stream?channel=a%7Fb", "channel"),
        ("/stream?channel=a%C2%85b", "channel"),
        ("/stream?channel=ok&channel=", "channel"),
        (b"/stream?channel=\xff", "UTF-8"),
        ("/stream?channel=%FF", "UTF-8"),
        ("/stream?channel=ok&lastEventId=%C3%28", "UTF-8"),
        ("/stream?" + "&".join(f"channel=c{i}" for i in range(17)), "16"),
    ],
    ids=[
        "empty",
        "201-chars",
        "nul",
        "lf",
        "cr",
        "del",
        "c1-nel",
        "second-empty",
        "raw-ff-byte",
        "percent-ff",
        "invalid-utf8-other-param",
        "17-channels",
    ],
)
def test_invalid_channel_request_gets_400_naming_the_problem(make_app, serve, client_for, path, problem):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, path)

    assert client.status == 400
    assert client.headers["content-type"].startswith("text/plain")
    message = client.body(timeout=2).decode("utf-8")
    assert problem in message, message
    assert sse.connections == []


@pytest.mark.parametrize(
    ("path", "channels"),
    [
        ("/stream?channel=" + "c" * 200, ("c" * 200,)),
        ("/stream?" + "&".join(f"channel=c{i}" for i in range(16)), tuple(f"c{i}" for i in range(16))),
        # As many as gevent's 8 KB request line allows.
        ("/stream?" + "&".join(["channel=a"] * 800), ("a",)),
        ("/stream", ("sse",)),
    ],
    ids=["200-chars", "16-channels", "800-repeats", "default"],
)
def test_valid_channel_requests_open_a_stream(make_app, serve, client_for, path, channels):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, path)

    assert client.status == 200
    [connection] = sse.connections
    assert connection.channels == channels
    sse.send_new_event(data="hello", channel=channels[-1])
    assert client.next_event(timeout=2).data == "hello"


def test_non_ascii_channel_names_open_a_stream(make_app, serve, client_for):
    # Channels exclude only control characters: percent-encoded UTF-8 names are valid.
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream?channel=caf%C3%A9&channel=%E2%9C%93")

    assert client.status == 200, client.body(timeout=2)
    [connection] = sse.connections
    assert connection.channels == ("café", "✓")
    sse.send_new_event(data="accent", channel="café")
    sse.send_new_event(data="check", channel="✓")
    assert [message.data for message in client.events(2, timeout=2)] == ["accent", "check"]


def test_repeated_channel_parameter_receives_each_event_once(make_app, serve, client_for):
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream?" + "&".join(["channel=a"] * 800))

    sse.send_new_event(data="one", channel="a")
    sse.send_new_event(data="two", channel="a")

    assert [message.data for message in client.events(2, timeout=2)] == ["one", "two"]
    with pytest.raises(TimeoutError):
        client.next_event(timeout=0.3)


# -- authorization --------------------------------------------------------------


def test_authorizer_refusing_a_channel_gets_403(make_app, serve, client_for):
    app, sse = make_app()
    calls = []

    @sse.authorize
    def may_listen(channel):
        calls.append((channel, request.args.getlist("channel"), request.headers.get("X-Token")))
        return channel != "secret"

    server = serve(app)
    client = client_for(server.port, "/stream?channel=news&channel=secret", {"X-Token": "t1"})

    assert client.status == 403
    assert client.headers["content-type"].startswith("text/plain")
    assert "secret" in client.body(timeout=2).decode()
    assert ("news", ["news", "secret"], "t1") in calls
    assert ("secret", ["news", "secret"], "t1") in calls
    assert sse.connections == []


def test_authorizer_allowing_every_channel_opens_the_stream(make_app, serve, client_for):
    app, sse = make_app()
    calls = []

    @sse.authorize
    def may_listen(channel):
        calls.append((channel, request.headers.get("X-Token")))
        return request.headers.get("X-Token") == "good"

    server = serve(app)
    client = client_for(server.port, "/stream?channel=a&channel=b", {"X-Token": "good"})
    refused = client_for(server.port, "/stream?channel=a", {"X-Token": "bad"})

    assert client.status == 200
    assert refused.status == 403
    assert sorted(calls[:2]) == [("a", "good"), ("b", "good")]
    [connection] = sse.connections
    assert connection.channels == ("a", "b")
    sse.send_new_event(data="in", channel="b")
    assert client.next_event(timeout=2).data == "in"


# -- connection limit ---------------------------------------------------------


def test_over_max_connections_gets_503_with_retry_after_until_a_slot_frees(make_app, serve, client_for):
    app, sse = make_app(SSE_MAX_CONNECTIONS=2, SSE_KEEPALIVE=0.2)
    server = serve(app)
    first = client_for(server.port)
    second = client_for(server.port)
    assert (first.status, second.status) == (200, 200)

    refused = client_for(server.port)

    assert refused.status == 503
    retry_after = refused.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) > 0, retry_after
    assert refused.body(timeout=2)
    assert len(sse.connections) == 2

    first.close()
    wait_until(lambda: len(sse.connections) == 1, what="the closed stream to leave sse.connections")

    third = client_for(server.port)
    assert third.status == 200
    sse.send_new_event(data="both")
    assert second.next_event(timeout=2).data == "both"
    assert third.next_event(timeout=2).data == "both"
