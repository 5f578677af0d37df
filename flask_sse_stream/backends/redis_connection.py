"""The Redis connections of one app in one process, and the calls made on them.

A bounded pool: streams that open at once wait for a connection instead of
each opening its own, so the connections held do not grow with the number of
clients. redis-py's sockets belong to the thread that made them: in a
monkey-patched process, a call from a native OS thread is handed to the hub
thread that owns them; in an unpatched one, a greenlet hands it to its hub's
thread pool, so that a blocking call never stalls the hub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from gevent.monkey import is_module_patched

from ..concurrency import Home, off_the_hub
from ..redact import redact_url

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("SSE_REDIS_URL needs redis-py: pip install 'flask-sse-stream[redis]'") from error

T = TypeVar("T")

#: Seconds a command may take before ``send_new_event`` gives up with an error.
COMMAND_TIMEOUT = 5.0
#: Connections to Redis per process, the subscription's included: the rest
#: serve sending and reading the store.
POOL_SIZE = 8
#: Seconds to wait for a connection to Redis.
CONNECT_TIMEOUT = 2.0

#: What redis-py raises when a connection goes away (an OSError or ValueError
#: comes from a socket closed under it).
CONNECTION_ERRORS = (redis.RedisError, OSError, ValueError)


class RedisConnections:
    def __init__(self, url: str) -> None:
        #: The URL without its password, for messages and logs.
        self.url = redact_url(url)
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self.client = redis.Redis.from_pool(pool)  # closing the client closes the pool
        #: Where the pool's gevent sockets live, in a monkey-patched process.
        self.home = Home() if is_module_patched("socket") else None

    def call(self, action: str, command: Callable[[], T]) -> T:
        """Run ``command`` where the sockets live; redis-py's errors as :class:`ConnectionError`."""
        with self.unavailable(action):
            if self.home is not None:
                return self.home.run(command)
            return off_the_hub(command)

    @contextmanager
    def unavailable(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as error:
            raise ConnectionError(f"could not {action}: Redis at {self.url} is unavailable ({error})") from error

    def close(self) -> None:
        self.client.close()
