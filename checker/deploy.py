"""The deployments under test, on free loopback ports, stopped by process group.

- ``redis``: ``gunicorn -k gevent -w 4`` running ``checker.app`` on a private
  redis-server (no persistence, ``--dir`` in the run's temporary directory,
  ``DEBUG`` allowed from loopback for the nemesis's ``DEBUG SLEEP``);
- ``memory``: the in-process store on gevent's WSGIServer, monkey-patched,
  in one subprocess (``checker.serve_memory``).

With ``server="websocket"`` each runs gevent-websocket's handler (gunicorn
with ``GeventWebSocketWorker``, ``WSGIServer(handler_class=WebSocketHandler)``),
which serves the stream over SSE and over WebSocket.

Both get ``CHECKER_DIR``, the run's directory: the app keeps its revocations
and writes its hub samples there (see ``checker.app_access``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ProcessServer, free_port

WORKERS = 4
#: gunicorn's worker class for each server.
WORKER_CLASS = {"gevent": "gevent", "websocket": "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"}
TOKEN = "checker-publish-token-0123456789"
PREFIX = "sse"


#: Redis 7 refuses DEBUG unless enabled; "local": from loopback connections only.
REDIS_ARGS = ["--enable-debug-command", "local"]


def app_env(config: dict[str, Any], directory: Path) -> dict[str, str]:
    env = {key: str(value) for key, value in config.items() if value is not None}
    return {**env, "CHECKER_DIR": str(directory)}


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s: {what}")
        time.sleep(0.02)


class RedisDeployment:
    name = "redis"
    ids_per_process = False

    def __init__(self, directory: Path, config: dict[str, Any], server: str = "gevent") -> None:
        self.directory = directory
        (directory / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(directory / "redis", extra_args=REDIS_ARGS)
        self.config = {**config, "SSE_REDIS_URL": self.redis.url, "SSE_REDIS_PREFIX": PREFIX}
        self.port = free_port()
        command = [
            PYTHON, "-m", "gunicorn", "-k", WORKER_CLASS[server], "-w", str(WORKERS), "--no-control-socket",
            "--graceful-timeout", "2", "-b", f"127.0.0.1:{self.port}", "checker.app:create_app()",
        ]  # fmt: skip
        try:
            env = app_env(self.config, directory)
            self.server = ProcessServer(command, self.port, env=env, log=directory / "gunicorn.log")
        except BaseException:
            self.redis.stop()
            raise
        self.wait_ready()

    def workers(self) -> list[int]:
        try:
            children = psutil.Process(self.server.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return sorted(child.pid for child in children if _alive(child))

    def processes(self) -> list[int]:
        """The processes that serve the app now."""
        return self.workers()

    def wait_ready(self, timeout: float = 30.0, without: int | None = None) -> None:
        """Until gunicorn runs its workers (``without`` that one, which was told to go)."""

        def ready() -> bool:
            workers = self.workers()
            return len(workers) == WORKERS and without not in workers

        wait_until(ready, timeout, f"{WORKERS} gunicorn workers")

    def redis_client(self, timeout: float | None = None) -> Any:
        """A client of the deployment's Redis (``timeout``: seconds a command may take, None: no bound).

        It never retries: redis-py's default would run a ``DEBUG SLEEP`` that a kill of Redis cut again
        on the restarted one.
        """
        return redis.Redis(
            port=self.redis.port, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    def log(self) -> str:
        return self.server.output

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.redis.stop()


class MemoryDeployment:
    name = "memory"
    ids_per_process = True

    def __init__(self, directory: Path, config: dict[str, Any], server: str = "gevent") -> None:
        self.directory = directory
        self.config = dict(config)
        self.server_args = ["websocket"] if server == "websocket" else []
        self.port = free_port()
        self._logs = 0
        self.server = self._start()

    def _start(self) -> ProcessServer:
        self._logs += 1
        command = [PYTHON, "-m", "checker.serve_memory", str(self.port), *self.server_args]
        log = self.directory / f"server-{self._logs}.log"
        return ProcessServer(command, self.port, env=app_env(self.config, self.directory), log=log)

    def pid(self) -> int:
        return self.server.process.pid

    def processes(self) -> list[int]:
        return [self.pid()] if self.server.process.poll() is None else []

    def restart(self, kill: bool) -> int:
        """Stop the server (SIGKILL, or SIGTERM and its graceful stop) and start a new one; the old pid."""
        old = self.server.process.pid
        if kill:
            os.killpg(old, signal.SIGKILL)
        self.server.stop()
        self.server = self._start()
        return old

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until(lambda: self.server.process.poll() is None, timeout, "the server running")

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.directory.glob("server-*.log")))

    def stop(self) -> None:
        self.server.stop()


Deployment = RedisDeployment | MemoryDeployment


def start(name: str, directory: Path, config: dict[str, Any], server: str = "gevent") -> Deployment:
    kind = RedisDeployment if name == "redis" else MemoryDeployment
    return kind(directory, config, server)


def _alive(process: psutil.Process) -> bool:
    """Whether a worker still runs: not a zombie, and not gone since it was listed."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
