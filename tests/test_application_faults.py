"""What an ordinary application does to the library, with no fault of Redis: timeouts, kills, short-lived threads.

A request handler wrapped in ``gevent.Timeout``, a greenlet killed while it
sends, a thread pool that makes a thread per job: each is run in a
monkey-patched process of its own (as a gunicorn gevent worker is), on a
private redis-server, and what the process holds is counted afterwards.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ROOT

#: The start of every script: a monkey-patched process with an app on Redis, and a stream open on it.
PRELUDE = r"""
from gevent import monkey

monkey.patch_all()

import json
import random
import sys

import gevent
import redis
from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.testing import open_stream

url, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
app = Flask(__name__)
app.config.update(SSE_REDIS_URL=url, SSE_KEEPALIVE=60)
sse = SSE(app)
watcher = redis.Redis.from_url(url)
watcher_port = watcher.connection_pool.connection_kwargs["port"]
stream = open_stream(app.test_client()).__enter__()

def pubsub_connections():
    return len(watcher.client_list(_type="pubsub"))

def still_open():
    # Whether the stream is open: it receives an event sent now (after what it had).
    sse.send_new_event(data="still open?")
    try:
        while stream.next_event(timeout=10).data != "still open?":
            pass
    except EOFError:
        return False
    return True

def report(**outcome):
    print(json.dumps(outcome), flush=True)
"""

TIMED_OUT_AND_KILLED = r"""
def sender(n):
    # Sends in a loop until its timeout fires, wherever the send is then.
    try:
        with gevent.Timeout(rng.uniform(0.001, 0.02)):
            while True:
                sse.send_new_event(data=f"{n}", id=rng.random() < 0.5)
    except (gevent.Timeout, ConnectionError):
        pass

def killed_sender(n):
    while True:
        sse.send_new_event(data=f"k{n}", id=rng.random() < 0.5)

counts = []
for round in range(8):
    senders = [gevent.spawn(sender, n) for n in range(40)]
    doomed = [gevent.spawn(killed_sender, n) for n in range(10)]
    gevent.sleep(rng.uniform(0.005, 0.02))
    for greenlet in doomed:
        greenlet.kill(block=False)
        gevent.sleep(rng.uniform(0, 0.002))
    gevent.joinall(senders + doomed)
    counts.append(pubsub_connections())
report(counts=counts, reconnects=sse.stats["redis_reconnects"], stream_open=still_open())
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def run_script(body: str, redis_server: RedisServer, seed: int = 0, timeout: float = 120) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, "-c", PRELUDE + body, redis_server.url, str(seed)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_senders_timed_out_or_killed_mid_send_leave_one_subscription_and_the_stream_open(
    redis_server: RedisServer,
) -> None:
    outcome = run_script(TIMED_OUT_AND_KILLED, redis_server)
    # One subscription after every round, never resubscribed: its stream stayed open and got the last event.
    assert outcome["counts"] == [1] * 8, outcome
    assert outcome["reconnects"] == 0 and outcome["stream_open"], outcome


SHORT_LIVED_THREADS = r"""
import gc
import os

from gevent.hub import Hub
from gevent.monkey import get_original

start_new_thread = get_original("_thread", "start_new_thread")
allocate_lock = get_original("_thread", "allocate_lock")

import psutil

def resources():
    # Open files but the connections to Redis (the pool grows up to its size as it is used), and hubs.
    gc.collect()
    to_redis = [c for c in psutil.Process().net_connections() if c.raddr and c.raddr.port == watcher_port]
    return len(os.listdir("/proc/self/fd")) - len(to_redis), sum(isinstance(o, Hub) for o in gc.get_objects())

def in_threads(threads, call):
    # Native OS threads (as a thread pool or a C library makes them) that call at once, then end.
    left = [allocate_lock() for _ in range(threads)]
    for done in left:
        done.acquire()
        start_new_thread(lambda done=done: (call(), done.release()), ())
    for done in left:
        gevent.get_hub().threadpool.apply(done.acquire)

def send():
    sse.send_new_event(data="from a thread", id=True)

in_threads(4, send)
before = resources()
for round in range(500 // 16):
    in_threads(16, send)
ended = []
for round in range(5):
    doomed = open_stream(app.test_client(), channel="doomed").__enter__()
    in_threads(2, lambda: sse.end_streams(channel="doomed"))
    try:
        doomed.next_event(timeout=10)
        ended.append(False)
    except EOFError:
        ended.append(True)
report(before=before, after=resources(), ended=ended, stream_open=still_open())
"""


def test_short_lived_os_threads_that_send_or_end_streams_leave_no_hub_and_no_file_descriptor_behind(
    redis_server: RedisServer,
) -> None:
    outcome = run_script(SHORT_LIVED_THREADS, redis_server)
    assert outcome["after"] == outcome["before"], outcome
    assert outcome["ended"] == [True] * 5 and outcome["stream_open"], outcome


BLOCKING_LOG_HANDLER = r"""
import logging
import re
import socket

from gevent.pywsgi import WSGIServer

class NetworkHandler(logging.Handler):
    # A handler that yields, as one that sends its records over a (patched) socket does.
    def emit(self, record):
        gevent.sleep(0.05)

logging.getLogger("flask_sse_stream").addHandler(NetworkHandler())
logging.getLogger("flask_sse_stream").setLevel(logging.INFO)
memory = Flask("memory")
memory.config.update(SSE_QUEUE_SIZE=4, SSE_KEEPALIVE=60)
memory_sse = SSE(memory)
server = WSGIServer(("127.0.0.1", 0), memory, log=None)
server.start()

def connect(buffer=None):
    sock = socket.socket()
    if buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    sock.connect(("127.0.0.1", server.server_port))
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock

def read_ids(sock, ids):
    # Appends the ids of the events in the order received, until the stream ends; what is scanned is
    # dropped (but for the start of a line that may go on in the next read).
    buffer = bytearray()
    while data := sock.recv(1 << 16):
        buffer += data
        end = 0
        for match in re.finditer(rb"\nid: (\d+)\n", buffer):
            ids.append(int(match[1]))
            end = match.end() - 1
        del buffer[: max(end, len(buffer) - 40)]

slow = connect(buffer=4096)  # never reads: cut once 4 events behind
received = [[], []]
readers = [gevent.spawn(read_ids, connect(), ids) for ids in received]
gevent.sleep(0.2)
sent = []

def sender(n):
    # Each event once the readers have had the one before (they keep up; the slow one cannot).
    for i in range(30):
        while any(len(ids) < len(sent) for ids in received):
            gevent.sleep(0.001)
        sent.append(memory_sse.send_new_event(data="x" * 500_000, id=True))
        gevent.sleep(0)

gevent.joinall([gevent.spawn(sender, n) for n in range(2)], timeout=30)
while any(len(ids) < 60 for ids in received) and not all(reader.dead for reader in readers):
    gevent.sleep(0.01)
report(received=received, dropped=memory_sse.stats["slow_clients_dropped"])
"""


def test_a_log_handler_that_yields_while_a_slow_client_is_cut_delays_no_other_stream(
    redis_server: RedisServer,
) -> None:
    # On main the process hung for good: the handler yielded under the in-process store's lock.
    outcome = run_script(BLOCKING_LOG_HANDLER, redis_server, timeout=60)
    assert outcome["received"] == [list(range(1, 61))] * 2, outcome
    assert outcome["dropped"] == 1, outcome
