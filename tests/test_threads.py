"""Sending from any greenlet or OS thread, with either backend, monkey-patched or not.

A gevent hub belongs to one OS thread: a native thread (a C library's, or
gevent's thread pool) that sends an event must not touch the hub's sockets
or greenlets itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import StreamClient
from tests.support.gunicorn import OneWorker
from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("backend", ["redis", "in-process"])
def test_a_native_os_thread_of_a_monkey_patched_worker_sends_to_the_streams(
    tmp_path: Path, redis_server: RedisServer, backend: str
) -> None:
    env = {"SSE_REDIS_URL": redis_server.url} if backend == "redis" else {}
    running = OneWorker(tmp_path / "gunicorn.log", **env)
    try:
        client = StreamClient(running.port, "/stream")
        assert client.status == 200
        answers = [running.publish(data=f"from a thread {n}", id="1", via="thread")[1] for n in range(1, 4)]
        first = answers[0].get("id")
        assert isinstance(first, int), (answers, running.why())
        # Ids increase by one (Redis's counter starts at its clock, the in-process one at 1).
        assert answers == [{"id": first + k} for k in range(3)], running.why()
        assert [(m.id, m.data) for m in client.events(3)] == [(first + k, f"from a thread {k + 1}") for k in range(3)]
        client.close()
    finally:
        running.stop()
