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
from typing import Any, TypeVar

from gevent.monkey import is_module_patched

from ..concurrency import Home, off_the_hub
from ..redact import redact_url

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException
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
CONNECTION_ERRORS = (redis.RedisError, RedisClusterException, OSError, ValueError)


class RedisConnections:
    """The connections of one app in this process: to one Redis server, or to a Redis Cluster."""

    def __init__(self, url: str, cluster: bool = False, on_connect: Callable[[Any], None] | None = None) -> None:
        #: The URL without its password, for messages and logs.
        self.url = redact_url(url)
        self.cluster = cluster
        options: dict[str, Any] = {
            "max_connections": POOL_SIZE,
            "socket_timeout": COMMAND_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
        }
        if on_connect is not None:
            # Run on every new connection, after redis-py's own set-up (AUTH,
            # SELECT), before any command of ours is sent on it.
            options["redis_connect_func"] = on_connect if cluster else _after_set_up(on_connect)
        self.client: Any
        if cluster:
            # redis-py's cluster client: it finds the node of each key's slot
            # (one node: every key of the app is in one slot) and follows MOVED.
            options.update(connection_pool_class=redis.BlockingConnectionPool, timeout=COMMAND_TIMEOUT)
            self.client = RedisCluster.from_url(url, **options)
        else:
            pool = redis.BlockingConnectionPool.from_url(url, timeout=COMMAND_TIMEOUT, **options)
            self.client = redis.Redis.from_pool(pool)  # closing the client closes the pool
        #: Where the pool's gevent sockets live, in a monkey-patched process.
        self.home = Home() if is_module_patched("socket") else None

    def node(self, key: str) -> redis.Redis:
        """A client of the node that holds ``key``: every key of the app, and its shard of messages."""
        if not self.cluster:
            return self.client  # type: ignore[no-any-return]
        return self.client.get_node_from_key(key).redis_connection  # type: ignore[no-any-return]

    def refresh(self) -> None:
        """On a cluster, ask again which node holds which slot: after a failover or a resharding."""
        if self.cluster:
            self.call("find the cluster's nodes", self.client.nodes_manager.initialize)

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
        except (redis.RedisError, RedisClusterException) as error:
            raise ConnectionError(f"could not {action}: Redis at {self.url} is unavailable ({error})") from error

    def close(self) -> None:
        self.client.close()


def _after_set_up(on_connect: Callable[[Any], None]) -> Callable[[Any], None]:
    """A ``redis_connect_func`` that does redis-py's set-up first (the cluster client does it itself)."""

    def connected(connection: Any) -> None:
        connection.on_connect()
        on_connect(connection)

    return connected
