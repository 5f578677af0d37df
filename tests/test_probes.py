"""The health probes, ``<prefix>/health/live`` and ``<prefix>/health/ready``, against a Redis stopped and started."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from tests.support.servers import free_port
from tests.support.waiting import wait_until


def probe(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        raw = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, json.loads(raw) if raw else None
    finally:
        connection.close()


@pytest.mark.parametrize("prefix", ["/stream", "/", "/api/events"])
def test_live_and_ready_answer_200_beside_the_stream_without_a_token(make_app, serve, prefix) -> None:
    app, _ = make_app(SSE_URL_PREFIX=prefix, SSE_PUBLISH_TOKEN="probe-test-token-0123456789")
    port = serve(app).port
    base = prefix.rstrip("/")
    for path, body in ((f"{base}/health/live", {"status": "live"}), (f"{base}/health/ready", {"status": "ready"})):
        status, headers, answer = probe(port, path)
        assert (status, answer) == (200, body)
        assert headers["content-type"] == "application/json"
        assert headers["cache-control"] == "no-store"
        assert "access-control-allow-origin" not in headers


def test_probes_answer_head_and_refuse_other_methods(make_app, serve) -> None:
    app, _ = make_app()
    port = serve(app).port
    assert probe(port, "/stream/health/ready", "HEAD")[0] == 200
    status, headers, answer = probe(port, "/stream/health/live", "POST")
    assert (status, headers["allow"]) == (405, "GET, HEAD, OPTIONS")
    assert "POST" in answer["error"]


def test_ready_follows_redis_away_and_back_without_showing_where_it_is(tmp_path, make_app, serve) -> None:
    redis_server = RedisServer(tmp_path)
    try:
        app, sse = make_app(SSE_REDIS_URL=redis_server.url.replace("redis://", "redis://:secret-password@"))
        port = serve(app).port
        # The first probe starts this process's subscription; ready once it is up.
        wait_until(lambda: probe(port, "/stream/health/ready")[0] == 200, what="ready with Redis up")

        redis_server.stop()
        went_away = time.monotonic()
        wait_until(lambda: probe(port, "/stream/health/ready")[0] == 503, timeout=2.0, what="503 within 2 s")
        status, _, answer = probe(port, "/stream/health/ready")
        assert status == 503
        assert answer["status"] == "unavailable"
        assert answer["reason"] in ("the Redis subscription is down", "Redis does not answer")
        assert time.monotonic() - went_away < 2.0
        raw = json.dumps(answer)
        assert str(redis_server.port) not in raw and "secret" not in raw and "redis://" not in raw
        assert probe(port, "/stream/health/live")[0] == 200  # the process still serves

        redis_server.start()
        wait_until(lambda: probe(port, "/stream/health/ready")[0] == 200, what="ready again with Redis back")
        assert sse.stats["redis_reconnects"] == 1
    finally:
        redis_server.stop()


def test_ready_is_503_while_redis_was_never_reached(make_app, serve) -> None:
    app, _ = make_app(SSE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    status, _, answer = probe(serve(app).port, "/stream/health/ready")
    assert (status, answer) == (503, {"status": "unavailable", "reason": "the Redis subscription is down"})
