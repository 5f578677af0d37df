"""A private redis-server on a free loopback port, stopped (and restartable) by process id."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .servers import free_port


class RedisServer:
    """``extra_args`` go to redis-server (``["--appendonly", "yes"]`` for a server whose data survives)."""

    def __init__(self, directory: Path, port: int | None = None, extra_args: list[str] | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server (scripts/test does it)")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
                "--maxclients",
                "20000",
                "--loglevel",
                "warning",
                *self._extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # No retries: redis-py would retry a refused password for seconds before saying so.
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()  # answers -LOADING (an error) until a persisted file is loaded
                break
            except redis.AuthenticationError:
                break  # up, and asking for the password it was given
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def ids_from_one(url: str, prefix: str = "sse") -> None:
    """Start the ids of the app on ``prefix`` at 1, for tests that read best with small ids.

    A counter Redis makes starts at its clock in microseconds (so that no id
    is ever given twice, whatever Redis forgot: see tests/test_redis_ids.py);
    this one is made at 0 beforehand, and marked as checked by this Redis run,
    so that it is taken as it is.
    """
    with redis.Redis.from_url(url) as client:
        run = client.info("server")["run_id"]
        client.set(f"{{{prefix}}}:id", 0, nx=True)
        client.set(f"{{{prefix}}}:run", run)
