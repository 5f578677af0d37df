"""Refused streams: counted by reason, logged at most once per interval per reason, and the per-client limit."""

from __future__ import annotations

import logging
import time

import pytest

from tests.support.waiting import wait_until

REASONS = {"limit": 0, "client_limit": 0, "authorization": 0, "bad_request": 0}


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_sse_stream" and "refused" in r.getMessage()]


def test_refused_streams_are_counted_by_reason(make_app, serve, client_for) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS=2, SSE_MAX_CONNECTIONS_PER_CLIENT=1)
    sse.authorize(lambda channel: channel != "secret")
    server = serve(app)
    assert client_for(server.port, "/stream?channel=").status == 400
    assert client_for(server.port, "/stream?channel=secret").status == 403
    assert client_for(server.port).status == 200
    assert client_for(server.port).status == 429  # a second stream of 127.0.0.1
    assert client_for(server.port, source="127.0.0.2").status == 200
    assert client_for(server.port, source="127.0.0.3").status == 503  # two streams open in all

    stats = sse.stats
    assert stats["streams_refused_by_reason"] == {"limit": 1, "client_limit": 1, "authorization": 1, "bad_request": 1}
    assert stats["streams_refused"] == 4


def test_a_flood_of_refusals_logs_one_line_per_reason(make_app, serve, client_for, caplog) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS_PER_CLIENT=1)
    sse.authorize(lambda channel: channel != "secret")
    server = serve(app)
    client_for(server.port)
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        for _ in range(20):
            assert client_for(server.port).status == 429
            assert client_for(server.port, "/stream?channel=secret", source="127.0.0.2").status == 403
            assert client_for(server.port, "/stream?channel=%00").status == 400
    lines = refusal_lines(caplog)
    assert len(lines) == 3, lines
    assert sse.stats["streams_refused"] == 60


def test_the_next_line_after_the_interval_counts_the_refusals_not_logged(make_app, serve, client_for, caplog) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS=1, SSE_LOG_INTERVAL=0.5)
    server = serve(app)
    client_for(server.port)
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        first = time.monotonic()
        for _ in range(5):
            assert client_for(server.port).status == 503
        assert len(refusal_lines(caplog)) == 1
        # No event marks the end of the interval: wait for the clock itself.
        wait_until(lambda: time.monotonic() - first > 0.6, what="the log interval to pass")
        assert client_for(server.port).status == 503
    lines = refusal_lines(caplog)
    assert len(lines) == 2, lines
    assert "and 4 more since the last such line" in lines[1]


def test_with_no_log_interval_every_refusal_is_logged(make_app, serve, client_for, caplog) -> None:
    app, _ = make_app(SSE_MAX_CONNECTIONS=1, SSE_LOG_INTERVAL=0)
    server = serve(app)
    client_for(server.port)
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        for _ in range(3):
            assert client_for(server.port).status == 503
    assert len(refusal_lines(caplog)) == 3


def test_per_client_limit_is_off_by_default(make_app, serve, client_for) -> None:
    app, sse = make_app()
    server = serve(app)
    clients = [client_for(server.port) for _ in range(5)]
    assert [c.status for c in clients] == [200] * 5
    assert app.config["SSE_MAX_CONNECTIONS_PER_CLIENT"] is None


def test_one_client_over_its_limit_gets_429_and_others_still_connect(make_app, serve, client_for) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS_PER_CLIENT=2, SSE_KEEPALIVE=0.2)
    server = serve(app)
    first, second = client_for(server.port), client_for(server.port)
    refused = client_for(server.port)
    assert refused.status == 429
    assert int(refused.headers["retry-after"]) > 0
    assert b"SSE_MAX_CONNECTIONS_PER_CLIENT" in refused.body()
    other = client_for(server.port, source="127.0.0.2")
    assert other.status == 200

    first.close()
    wait_until(lambda: len(sse.connections) == 2, what="the closed stream to free its slot")
    again = client_for(server.port)
    assert again.status == 200
    sse.send_new_event(data="all")
    assert [c.next_event(timeout=2).data for c in (second, again, other)] == ["all"] * 3


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_an_invalid_per_client_limit_is_refused_naming_it(make_app, value) -> None:
    with pytest.raises(ValueError, match="SSE_MAX_CONNECTIONS_PER_CLIENT must be an int of at least 1"):
        make_app(SSE_MAX_CONNECTIONS_PER_CLIENT=value)


@pytest.mark.parametrize("value", [-1, "60", None, float("inf")])
def test_an_invalid_log_interval_is_refused_naming_it(make_app, value) -> None:
    with pytest.raises(ValueError, match="SSE_LOG_INTERVAL must be a number of seconds, 0 or more"):
        make_app(SSE_LOG_INTERVAL=value)


def test_a_new_app_counts_no_refusal(make_app) -> None:
    _, sse = make_app()
    assert sse.stats["streams_refused_by_reason"] == REASONS


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_limits_are_checked_before_the_authorizer(make_app, serve, client_for, method) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS=2, SSE_MAX_CONNECTIONS_PER_CLIENT=1)
    asked: list[str] = []

    @sse.authorize
    def count(channel: str) -> bool:
        asked.append(channel)
        return True

    server = serve(app)
    assert client_for(server.port).status == 200
    assert client_for(server.port, source="127.0.0.2").status == 200
    assert len(asked) == 2
    many = "&".join(f"channel=c{i}" for i in range(16))
    # At its own limit: 429, and no authorizer call for any of its 16 channels.
    assert client_for(server.port, f"/stream?{many}", method=method).status == 429
    # At the process's limit: 503, and none either.
    assert client_for(server.port, f"/stream?{many}", method=method, source="127.0.0.3").status == 503
    assert len(asked) == 2, asked
