"""A gunicorn with four gevent workers on a test app, and streams spread over its workers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .client import StreamClient
from .redis_server import RedisServer
from .servers import PYTHON, ProcessServer, free_port
from .waiting import wait_until

WORKERS = 4
GRACEFUL_TIMEOUT = 10
#: Streams to open at least, and at most while waiting for every worker to serve one.
STREAMS = 24
STREAMS_BOUND = 3000


@dataclass
class Answer:
    status: int
    body: Any
    #: The pid of the worker that answered (``X-Worker``).
    worker: int
    #: Seconds from sending the request to reading the whole answer.
    seconds: float


class Gunicorn:
    """``gunicorn -k gevent -w 4`` with ``app`` (the basic app), its Redis (if any) and what the tests do with it.

    The app must answer ``GET /info`` (any JSON) with its worker's pid in ``X-Worker``.
    """

    def __init__(
        self,
        log: Path,
        redis_server: RedisServer | None,
        app: str = "tests.apps.basic:create_app()",
        worker_class: str = "gevent",
        **env: str,
    ) -> None:
        self.port = free_port()
        self.redis = redis_server
        self.prefix = env.get("SSE_REDIS_PREFIX", "sse")
        if redis_server is not None:
            env["SSE_REDIS_URL"] = redis_server.url
        command = [
            PYTHON, "-m", "gunicorn", "-k", worker_class, "-w", str(WORKERS), "--worker-connections", "1000",
            "--graceful-timeout", str(GRACEFUL_TIMEOUT), "--no-control-socket", "-b", f"127.0.0.1:{self.port}",
            app,
        ]  # fmt: skip
        self.server = ProcessServer(command, self.port, env=env, log=log)
        try:
            self.booted = self.wait_for_workers()
        except BaseException:
            self.server.stop()
            raise

    def why(self) -> str:
        """For assertion messages: gunicorn's log."""
        return f"\n--- gunicorn log ---\n{self.server.output}"

    # -- processes --------------------------------------------------------

    def workers(self) -> set[int]:
        """The worker processes gunicorn runs now (the master's live children)."""
        children = psutil.Process(self.server.process.pid).children()
        return {child.pid for child in children if child.status() != psutil.STATUS_ZOMBIE}

    def wait_for_workers(self, timeout: float = 30.0) -> set[int]:
        """Wait until each of the master's ``WORKERS`` workers has answered ``/info``; their pids."""
        answered: set[int] = set()

        def all_answered() -> bool:
            answered.add(self.request("GET", "/info").worker)
            current = self.workers()
            return len(current) == WORKERS and current <= answered

        wait_until(all_answered, timeout, f"all {WORKERS} workers answer /info{self.why()}")
        return self.workers()

    # -- HTTP ---------------------------------------------------------------

    def request(self, method: str, path: str, timeout: float = 10.0, **params: Any) -> Answer:
        """One request on a new connection, so the kernel hands it to any worker."""
        body = urllib.parse.urlencode(params).encode() if method == "POST" else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, raw = error.code, error.headers, error.read()
        seconds = time.monotonic() - started
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw.decode("utf-8", "replace")
        return Answer(status, answer, int(headers["X-Worker"]), seconds)

    def publish(self, **fields: Any) -> Answer:
        answer = self.request("POST", "/publish", **fields)
        assert answer.status == 200, f"{answer}{self.why()}"
        return answer

    # -- Redis ----------------------------------------------------------------

    def last_id(self) -> int:
        assert self.redis is not None
        with self.redis.client() as client:
            return int(client.get(f"{{{self.prefix}}}:id") or 0)

    def stop(self) -> None:
        self.server.stop()


def worker_of(client: StreamClient) -> int:
    return int(client.headers["x-worker"])


def open_streams(
    running: Gunicorn,
    client_for: Callable[..., StreamClient],
    path: str,
    at_least: int = STREAMS,
    headers: dict[str, str] | None = None,
) -> list[StreamClient]:
    """At least ``at_least`` streams, and more until each current worker serves one, each past its opening.

    Which worker accepts a connection is the kernel's choice, and a busy one
    may take none for a while: past ``at_least``, a stream is kept only if its
    worker serves none yet.
    """
    clients: list[StreamClient] = []
    workers = running.workers()
    attempts = 0
    while len(clients) < at_least or not workers <= {worker_of(c) for c in clients}:
        attempts += 1
        assert attempts <= STREAMS_BOUND, (
            f"{attempts} streams and still none on every worker {sorted(workers)}:"
            f" {Counter(worker_of(c) for c in clients)}{running.why()}"
        )
        client = client_for(running.port, path, headers)
        assert client.status == 200, f"{client.status} {client.body()!r}{running.why()}"
        assert client.next_chunk() is not None, running.why()  # the opening comment (and any replay)
        if len(clients) < at_least or worker_of(client) not in {worker_of(c) for c in clients}:
            clients.append(client)
        else:
            client.close()
    return clients


def ended_within(clients: list[StreamClient], started: float, limit: float) -> list[float]:
    """Wait for each stream to end and its connection to close; the seconds since ``started``."""
    times = []
    for client in clients:
        client.wait_closed(limit + 5)
        assert client.sock.recv(1) == b"", "the response ended but its connection stayed open"
        times.append(time.monotonic() - started)
    return times
