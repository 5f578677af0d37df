"""Open streams per channel for the whole app: each process writes its own counts to Redis, batched.

A process that has streams keeps a hash ``{prefix}:counts:<process>``
(channel -> its open streams there; the field ``""``: all of them) and an
entry in ``{prefix}:counts`` (process -> when that hash expires). A
background thread (a greenlet when monkey-patched) writes what changed at
most once per ``SSE_COUNT_INTERVAL``, in one script call, and refreshes the
expiry every :data:`REFRESH` intervals: opening or closing a stream costs no
round trip to Redis. A process that dies without a word (SIGKILL) drops out
when its hash expires, :data:`EXPIRY` intervals after its last write.

Reading sums the other live processes' hashes in one script call and adds
this process's counts as they are now.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..concurrency import start_background
from ..fanout import Fanout
from . import redis_scripts
from .redis_connection import RedisConnections

log = logging.getLogger("flask_sse_stream.redis")

#: Intervals between two writes when nothing changed (to keep the counts from expiring).
REFRESH = 5
#: Intervals after its last write that a process's counts expire.
EXPIRY = 15
#: The field of a process's hash that counts all its streams.
ALL = ""


class Counts:
    def __init__(self, connections: RedisConnections, key: Callable[..., str], fanout: Fanout, interval: float) -> None:
        self._connections = connections
        self._index = key("counts")
        self._hash_prefix = key("counts", "")
        self._fanout = fanout
        self.interval = interval
        self._write = connections.client.register_script(redis_scripts.WRITE_COUNTS)
        self._read = connections.client.register_script(redis_scripts.READ_COUNTS)
        self._lock = threading.Lock()
        # Whether the writer started last still runs (None: none started).
        self._alive: Callable[[], bool] | None = None
        self._stopping = threading.Event()
        self._pid = 0
        self._process = ""
        # What Redis holds for this process, as of the fan-out's version.
        self._written: dict[str, int] = {}
        self._version = 0
        self._written_at = 0.0
        self._failing = False

    def keep_running(self) -> None:
        """Start the writer unless it runs (in the thread that owns the Redis sockets)."""
        if self._running():
            return
        home = self._connections.home
        if home is not None and not home.here():
            home.soon(self.keep_running)
            return
        with self._lock:
            if not self._running() and not self._stopping.is_set():
                self._start_process()
                self._alive = start_background(self._run, "sse-redis-counts")

    def _running(self) -> bool:
        """Whether this process's writer runs (a forked child's has not started)."""
        return self._alive is not None and self._pid == os.getpid() and self._alive()

    def _start_process(self) -> None:
        """A name for this process's counts (after a fork, the child's own)."""
        self._pid = os.getpid()
        self._process = f"{socket.gethostname()}:{self._pid}:{os.urandom(4).hex()}"
        self._written, self._version, self._written_at = {}, 0, 0.0

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.write()
                if self._failing:
                    log.info("writing this process's stream counts to Redis again")
                self._failing = False
            except ConnectionError as error:
                if not self._failing:
                    log.warning("could not write this process's stream counts: %s", error)
                self._failing = True
                self._written = {ALL: -1}  # unknown: all of them next time
            except Exception:  # noqa: BLE001 - the counts must not stop for good
                log.exception("writing the stream counts failed")

    def write(self) -> None:
        """Write what changed since the last write, or refresh the expiry when it is due."""
        version = self._fanout.version
        due = bool(self._written) and time.monotonic() - self._written_at >= REFRESH * self.interval
        if version == self._version and not due:
            return
        counts = self._fanout.streams_by_channel()
        if counts:
            counts[ALL] = len(self._fanout)
        full = not self._written or self._written.get(ALL) == -1
        changes = counts if full else _changes(self._written, counts)
        if not changes and not due:
            self._version = version
            return
        if not self._call(full, changes) and not full:
            self._call(True, counts)  # the hash expired meanwhile (Redis restarted, say)
        self._written, self._version, self._written_at = counts, version, time.monotonic()

    def _call(self, full: bool, changes: dict[str, int]) -> bool:
        args: list[Any] = [self._process, int(EXPIRY * self.interval * 1000), int(full)]
        for channel, count in changes.items():
            args += [channel, count]
        keys = [self._index, self._hash_prefix + self._process]
        return bool(self._connections.call("write the stream counts", lambda: self._write(keys=keys, args=args)))

    def read(self, channel: str | None = None) -> dict[str, int]:
        """Open streams per channel in every process of the app (``""``: all streams); of ``channel`` only if given."""
        process = self._process if self._pid == os.getpid() else ""
        args = [self._hash_prefix, process, "0" if channel is None else "1", channel or ""]
        pairs = self._connections.call("read the stream counts", lambda: self._read(keys=[self._index], args=args))
        totals = {pairs[i].decode(errors="replace"): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        mine = self._fanout.streams_by_channel()
        mine[ALL] = len(self._fanout)
        for name, count in mine.items():
            if channel is None or name == channel:
                totals[name] = totals.get(name, 0) + count
        return {name: count for name, count in totals.items() if count > 0 or name == ALL}

    def stop(self) -> None:
        """Stop writing and take this process's counts out (when Redis answers)."""
        self._stopping.set()
        if not self._written or self._pid != os.getpid():
            return
        try:
            self._call(True, {})
        except ConnectionError:
            pass  # they expire


def _changes(written: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    changes = {channel: count for channel, count in counts.items() if written.get(channel) != count}
    changes.update((channel, 0) for channel in written if channel not in counts)
    return changes
