"""Faults in a real deployment (SPEC 3, 6): nothing that was stored is lost.

Each test breaks something real, with the library's own code paths left
alone: a Redis killed with SIGKILL and started again, a gunicorn worker killed
with SIGKILL, a client that stops reading, a client whose network vanishes
without a FIN (a network namespace behind a veth pair, whose link is cut),
and a flood of connections over ``SSE_MAX_CONNECTIONS``.

"Nothing stored is lost" is checked the same way everywhere (``check_once_in_order``):
each client's id'd events, across all its connections, are in strictly
increasing id order (so none twice), include every event that
``send_new_event`` (or ``POST /publish``) accepted, and anything else is an
event whose send failed while the fault was happening (Redis may have stored
it before the connection broke, and then it is delivered, which is right).
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import psutil
import pytest
from flask import Flask
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from flask_sse_stream import SSE, make_sse, start_sse_tcp_port
from tests.support.client import Message, StreamClient
from tests.support.internals import streams_of
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ProcessServer, free_port
from tests.support.waiting import wait_until

END = "end-of-test"
PAYLOAD = "x" * 8000  # events of about 8 KB, for the slow client


@dataclass
class Ledger:
    """What a sender tried: the ``(id, data)`` accepted, and the data of the sends that failed."""

    accepted: list[tuple[int, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def check_once_in_order(who: str, received: list[tuple[int | None, str]], ledger: Ledger) -> None:
    """``received`` (id'd events only) is every accepted event, once, in id order; extras only failed sends."""
    ids = [id for id, _ in received]
    assert all(a < b for a, b in itertools.pairwise(ids)), f"{who}: ids not strictly increasing: {ids}"
    missing = sorted(set(ledger.accepted) - set(received))
    assert not missing, f"{who}: {len(missing)} accepted events never arrived, first {missing[:5]} (got {ids})"
    failed = set(ledger.failed)
    extra = [(id, data) for id, data in received if (id, data) not in set(ledger.accepted)]
    assert all(data in failed for _, data in extra), f"{who}: events nobody sent: {extra[:5]}"


def id_pairs(messages: list[Message]) -> list[tuple[int | None, str]]:
    return [(m.id, m.data) for m in messages if m.id is not None]


def read_until(client: StreamClient, data: str, timeout: float = 10.0) -> list[Message]:
    """The events of ``client`` before the first whose data is ``data``."""
    deadline = time.monotonic() + timeout
    messages = []
    while (message := client.next_event(max(deadline - time.monotonic(), 0.001))).data != data:
        messages.append(message)
    return messages


# -- a. Redis killed and restarted mid-stream -------------------------------------------------


def is_ready(port: int) -> bool:
    """The readiness probe answers 200: the process's Redis subscription is up and has caught up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream/health/ready", timeout=5) as response:
            return response.status == 200
    except OSError:  # 503 (an HTTPError) while the subscription is down
        return False


def test_redis_killed_and_restarted_mid_stream_loses_no_accepted_event(
    tmp_path: Path, make_app: Callable[..., tuple[Flask, SSE]], serve: Callable[..., Any], client_for: Any
) -> None:
    redis_server = RedisServer(tmp_path, extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_KEEPALIVE=0.5, SSE_MAX_HISTORY=100_000)
    try:
        server = serve(app)
        path = "/stream?channel=outage"
        staying = [client_for(server.port, path) for _ in range(3)]
        leaving = client_for(server.port, path)
        ledger = Ledger()
        stop = threading.Event()

        def send() -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                data = f"n{n}"
                try:
                    ledger.accepted.append((sse.send_new_event(data=data, id=True, channel="outage"), data))
                except ConnectionError:
                    ledger.failed.append(data)
                except BaseException as error:  # noqa: BLE001 - reported by the test thread
                    ledger.errors.append(error)
                    return
                time.sleep(0.003)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            wait_until(lambda: len(ledger.accepted) >= 50, 10, "50 events sent before the kill")
            # The leaving client reads a while, then goes away (a network blip).
            first = []
            while not first or first[-1].id < ledger.accepted[40][0]:
                first.append(leaving.next_event(timeout=5))
            leaving.close()

            redis_server.stop()  # SIGKILL
            killed_at = len(ledger.accepted)
            wait_until(lambda: len(ledger.failed) >= 150, 10, "sends to fail while Redis is down")
            assert len(ledger.accepted) <= killed_at + 1  # at most one send was already past Redis
            redis_server.start()  # same port, same directory: the append-only file is loaded
            restarted_at = len(ledger.accepted)
            wait_until(lambda: len(ledger.accepted) >= restarted_at + 50, 15, "sends to succeed again")

            last_seen = first[-1].id
            again = client_for(server.port, path, {"Last-Event-ID": str(last_seen)})
            assert again.status == 200
            resumed_at = len(ledger.accepted)
            wait_until(lambda: len(ledger.accepted) >= resumed_at + 30, 10, "more sends after the resume")
        finally:
            stop.set()
            sender.join(10)
        assert not ledger.errors, ledger.errors
        assert ledger.failed, "no send failed: Redis was not down while sending"

        # END is live-only: a subscription still down when it is sent could not
        # bring it back (the streams would end and resume, as they should). The
        # listener retries with a back-off of up to 2 s, so on a slow machine it
        # may come back only after all the sends above: wait, as a load balancer
        # does, for the process to say it is ready.
        wait_until(lambda: is_ready(server.port), 10, "the subscription to come back")
        sse.send_new_event(data=END, channel="outage")
        for n, client in enumerate(staying):
            check_once_in_order(f"open stream {n}", id_pairs(read_until(client, END)), ledger)
        reconnected = id_pairs(first) + id_pairs(read_until(again, END))
        check_once_in_order("the client that reconnected", reconnected, ledger)
        # The ids went on from where they were: the counter survived the kill.
        ids = [id for id, _ in ledger.accepted]
        assert all(a < b for a, b in itertools.pairwise(ids)), ids
    finally:
        sse.close()
        redis_server.stop()


# -- b. a gunicorn worker killed ------------------------------------------------------------------


class Gunicorn:
    """``gunicorn -k gevent -w N`` serving tests/apps/basic.py on Redis."""

    def __init__(self, log: Path, redis_url: str, workers: int) -> None:
        self.port = free_port()
        self.count = workers
        command = [
            PYTHON, "-m", "gunicorn", "-k", "gevent", "-w", str(workers), "--no-control-socket",
            "--graceful-timeout", "2", "-b", f"127.0.0.1:{self.port}", "tests.apps.basic:create_app()",
        ]  # fmt: skip
        env = {"SSE_REDIS_URL": redis_url, "SSE_KEEPALIVE": "0.5"}
        self.server = ProcessServer(command, self.port, env=env, log=log)

    def workers(self) -> set[int]:
        children = psutil.Process(self.server.process.pid).children()
        return {child.pid for child in children if child.status() != psutil.STATUS_ZOMBIE}

    def why(self) -> str:
        return f"\n--- gunicorn log ---\n{self.server.output}"

    def publish(self, data: str, channel: str, with_id: bool = True, timeout: float = 5.0) -> int | None:
        body = urllib.parse.urlencode({"data": data, "channel": channel, "id": "1" if with_id else ""}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/publish", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["id"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.server.stop()


def test_killed_worker_clients_resume_and_the_other_workers_clients_are_untouched(
    tmp_path: Path, client_for: Callable[..., StreamClient]
) -> None:
    redis_server = RedisServer(tmp_path)
    running = Gunicorn(tmp_path / "gunicorn.log", redis_server.url, workers=2)
    try:
        wait_until(lambda: len(running.workers()) == 2, 30, f"two workers{running.why()}")
        path = "/stream?channel=kill"
        # Three streams on each worker. Which worker accepts a connection is
        # the kernel's choice (and one may still be starting): keep the
        # streams a worker needs and close the others, until both have three.
        clients: list[StreamClient] = []
        per_worker = dict.fromkeys(running.workers(), 0)
        deadline = time.monotonic() + 60
        while min(per_worker.values()) < 3:
            assert time.monotonic() < deadline, f"streams per worker: {per_worker}{running.why()}"
            client = client_for(running.port, path)
            assert client.status == 200, running.why()
            worker = int(client.headers["x-worker"])
            if per_worker[worker] >= 3:
                client.close()
            else:
                per_worker[worker] += 1
                clients.append(client)
        booted = running.workers()
        ledger = Ledger()
        for n in range(5):
            ledger.accepted.append((running.publish(f"before {n}", "kill"), f"before {n}"))
        stop = threading.Event()

        def send() -> None:
            for n in itertools.count():
                if stop.wait(0.01):
                    return
                data = f"during {n}"
                try:
                    ledger.accepted.append((running.publish(data, "kill"), data))
                except (OSError, http.client.HTTPException):  # URLError is an OSError
                    ledger.failed.append(data)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            wait_until(lambda: len(ledger.accepted) >= 20, 10, "events sent before the kill")
            victim = min(booted)
            survivor = max(booted)
            orphans = [c for c in clients if c.headers["x-worker"] == str(victim)]
            others = [c for c in clients if c.headers["x-worker"] == str(survivor)]
            os.kill(victim, signal.SIGKILL)
            # Each orphan reads what reached it, up to the end of its connection.
            first: dict[StreamClient, list[Message]] = {}
            for client in orphans:
                got: list[Message] = []
                try:
                    while True:
                        got.append(client.next_event(timeout=5))
                except EOFError:
                    pass
                first[client] = got
            time.sleep(0.5)  # events go on meanwhile: the orphans miss them
            resumed = {}
            for client in orphans:
                again = client_for(running.port, path, {"Last-Event-ID": client.last_event_id})
                assert again.status == 200, running.why()
                assert again.headers["x-worker"] != str(victim)
                resumed[client] = again
            count = len(ledger.accepted)
            wait_until(lambda: len(ledger.accepted) >= count + 20, 10, "events sent after the resume")
        finally:
            stop.set()
            sender.join(10)

        assert victim not in running.workers() and survivor in running.workers(), running.why()
        running.publish(END, "kill", with_id=False)
        for n, client in enumerate(others):
            messages = read_until(client, END)  # on the same connection: it never ended
            check_once_in_order(f"stream {n} of the surviving worker", id_pairs(messages), ledger)
        for n, client in enumerate(orphans):
            received = id_pairs(first[client]) + id_pairs(read_until(resumed[client], END))
            check_once_in_order(f"stream {n} of the killed worker, resumed", received, ledger)
            assert not any(m.event == "sse-reset" for m in first[client]), "a reset: the store lost events"
    finally:
        running.stop()
        redis_server.stop()


# -- c. a client that stops reading -------------------------------------------------------------------


def test_client_that_stops_reading_is_dropped_counted_and_bounded(
    make_app: Callable[..., tuple[Flask, SSE]], serve: Callable[..., Any], client_for: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="flask_sse_stream")
    queue_size = 16
    app, sse = make_app(SSE_QUEUE_SIZE=queue_size, SSE_MAX_HISTORY=10_000, SSE_KEEPALIVE=30)
    server = serve(app)
    stalled = client_for(server.port, "/stream?channel=slow", recv_buffer=4096)  # never reads after the head
    [stalled_connection] = streams_of(app)
    readers = [client_for(server.port, "/stream?channel=slow") for _ in range(3)]
    elsewhere = client_for(server.port, "/stream?channel=other")

    sent = 0
    most_pending = 0
    slowest = 0.0
    while stalled_connection in streams_of(app):
        assert sent < 3000, "the stalled client was never dropped"
        started = time.monotonic()
        sent += 1
        sse.send_new_event(data=f"{sent}:{PAYLOAD}", id=True, channel="slow")
        slowest = max(slowest, time.monotonic() - started)
        # White-box (SPEC 3, "memory stays bounded"): the events held for the
        # stalled client are its Stream's `pending` deque, never longer
        # than SSE_QUEUE_SIZE.
        most_pending = max(most_pending, len(stalled_connection.pending))
        for reader in readers:
            message = reader.next_event(timeout=5)
            assert (message.id, message.data) == (sent, f"{sent}:{PAYLOAD}")
    assert most_pending <= queue_size
    assert slowest < 0.5, f"a send took {slowest:.2f} s: senders must not wait on a stalled client"
    stats = sse.stats
    assert stats["slow_clients_dropped"] == 1
    assert stats["streams"] == 4 and stats["streams_by_channel"] == {"slow": 3, "other": 1}
    dropped = [r for r in caplog.records if r.levelno == logging.INFO and "more than 16 events behind" in r.message]
    assert len(dropped) == 1, [r.message for r in caplog.records]

    # The server closed the connection itself: the stalled client reads what was buffered, then the end.
    got = []
    with pytest.raises(EOFError):
        while True:
            got.append(stalled.next_event(timeout=10).id)
    assert got == list(range(1, len(got) + 1)) and len(got) < sent
    # The others are in step, on both channels.
    sse.send_new_event(data="after", channel="slow")
    sse.send_new_event(data="after", channel="other")
    for reader in [*readers, elsewhere]:
        assert reader.next_event(timeout=5).data == "after"


# -- d. a peer that vanishes without a FIN -------------------------------------------------------------

_namespaces = itertools.count()

#: A stream client for the far side of the veth pair: prints one line per chunk it receives.
NS_CLIENT = r"""
import socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.create_connection((host, port), timeout=10)
sock.sendall(b"GET %s HTTP/1.1\r\nHost: veth\r\n\r\n" % path.encode())
sock.settimeout(None)
while True:
    data = sock.recv(65536)
    print(time.monotonic(), "keepalive" if b": keep-alive" in data else "data", len(data), flush=True)
    if not data:
        break
"""


@dataclass
class Namespace:
    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    def run(self, *args: str) -> None:
        ip(*args)

    def in_ns(self, *args: str) -> None:
        ip("netns", "exec", self.name, *args)


def ip(*args: str) -> None:
    done = subprocess.run([shutil.which("ip") or "ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    """A network namespace joined to this one by a veth pair, deleted afterwards whatever happens."""
    n = next(_namespaces)
    tag = f"{os.getpid() % 100000}x{n}"
    third = (os.getpid() + n) % 250
    ns = Namespace(f"sse-test-{tag}", f"vh{tag}", f"vn{tag}", f"10.213.{third}.1", f"10.213.{third}.2")
    try:
        ip("netns", "add", ns.name)
        ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        ip("link", "set", ns.ns_if, "netns", ns.name)
        ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        ip("link", "set", ns.host_if, "up")
        ns.in_ns("ip", "addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_if)
        ns.in_ns("ip", "link", "set", ns.ns_if, "up")
        ns.in_ns("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        for args in (("link", "del", ns.host_if), ("netns", "del", ns.name)):
            try:
                ip(*args)
            except RuntimeError:
                pass  # never created, or gone with the other


def serve_on(app: Flask, host: str) -> tuple[int, Callable[[], None]]:
    """``app`` on gevent's WSGIServer at ``host`` (any address, unlike ``serve``), in a thread with its own hub."""
    started = threading.Event()
    control: dict[str, Any] = {}

    def run() -> None:
        server = WSGIServer((host, 0), app, spawn=Pool(), log=None)
        control.update(loop=gevent.get_hub().loop, stopping=gevent.event.Event())
        server.start()
        control["port"] = server.server_port
        started.set()
        control["stopping"].wait()
        server.stop(timeout=0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the server did not start"

    def stop() -> None:
        control["loop"].run_callback_threadsafe(control["stopping"].set)
        thread.join(5)

    return control["port"], stop


@pytest.mark.parametrize("how", ["flask app on WSGIServer", "start_sse_tcp_port"])
def test_peer_that_vanishes_without_a_fin_is_dropped_within_two_keepalives(namespace: Namespace, how: str) -> None:
    keepalive = 1.0
    if how == "start_sse_tcp_port":
        sse = make_sse(keepalive=keepalive)
        stop = start_sse_tcp_port(0, sse, hostname=namespace.host_ip)
        port, path = stop.port, "/"
    else:
        app = Flask(__name__)
        app.config["SSE_KEEPALIVE"] = keepalive
        sse = SSE(app)
        port, stop = serve_on(app, namespace.host_ip)
        path = "/stream"
    client = subprocess.Popen(
        ["ip", "netns", "exec", namespace.name, PYTHON, "-c", NS_CLIENT, namespace.host_ip, str(port), path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = iter(client.stdout)  # type: ignore[arg-type]
        first = next(lines).split()
        assert first[1] == "data" and int(first[2]) > 0, first
        assert len(sse.connections) == 1
        # Vanish just after a keep-alive went through: the worst moment, a whole
        # period before the next write that will never be acknowledged.
        while next(lines).split()[1] != "keepalive":
            pass
        vanished = time.monotonic()
        namespace.in_ns("ip", "link", "set", namespace.ns_if, "down")  # no FIN, no RST: the peer is just gone
        while sse.connections and time.monotonic() - vanished < 30:
            time.sleep(0.01)
        gone = time.monotonic() - vanished
        assert not sse.connections, "the stream is still open 30 s after its peer vanished"
        assert gone < 2 * keepalive + 0.5, f"the stream left sse.connections {gone:.2f} s after its peer vanished"
    finally:
        client.kill()
        client.communicate(timeout=5)
        stop()


# -- e. load shedding ------------------------------------------------------------------------------------

#: Opens FLOOD connections as fast as it can from THREADS threads, asks each for a
#: stream, and prints one JSON line: the statuses it got ("error: ..." for failures).
FLOOD = r"""
import collections, json, socket, sys, threading
port, total, threads, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
statuses = collections.Counter()
lock = threading.Lock()
def attack(count):
    for _ in range(count):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: flood\r\n\r\n" % path)
                head = b""
                while b"\r\n" not in head:
                    more = sock.recv(4096)
                    if not more:
                        break
                    head += more
                status = head.split(b" ", 2)[1].decode() if head else "closed"
        except OSError as error:
            status = "error: " + type(error).__name__
        with lock:
            statuses[status] += 1
print("started", flush=True)
workers = [threading.Thread(target=attack, args=(total // threads,)) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(json.dumps(statuses), flush=True)
"""

#: The served clients, in a process of their own (so that reading them does not
#: compete with the server for this process's GIL): opens COUNT streams, prints
#: "ready", then for each event "ev-<n>" (in order) prints "<n> <time.monotonic()>"
#: once it has reached all of them.
READERS = r"""
import selectors, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
selector = selectors.DefaultSelector()
buffers = {}
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: reader\r\n\r\n")
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)
    buffers[sock] = b""
def until_all(marker):
    while True:
        waiting = [sock for sock, data in buffers.items() if marker not in data]
        if not waiting:
            return
        for key, _ in selector.select(10):
            data = key.fileobj.recv(1 << 16)
            if not data:
                sys.exit("a served stream ended")
            buffers[key.fileobj] += data
until_all(b": flask_sse_stream")
print("ready", flush=True)
n = 0
while True:
    marker = b"data: ev-%d\n" % n
    until_all(marker)
    print(n, time.monotonic(), flush=True)
    for sock, data in buffers.items():
        buffers[sock] = data[data.index(marker) + len(marker):]
    n += 1
"""


def test_over_max_connections_gets_503_and_a_flood_does_not_delay_the_served(
    make_app: Callable[..., tuple[Flask, SSE]], serve: Callable[..., Any], client_for: Any
) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS=50, SSE_KEEPALIVE=30)

    @app.get("/busy")
    def busy() -> Any:  # the cheapest refusal a Flask app can give: the control
        return "busy\n", 503, {"Retry-After": "5"}

    server = serve(app)
    readers = subprocess.Popen(
        [sys.executable, "-c", READERS, str(server.port), "50"], stdout=subprocess.PIPE, text=True
    )
    floods: list[subprocess.Popen[str]] = []
    try:
        assert readers.stdout is not None and readers.stdout.readline().strip() == "ready"
        assert sse.stats["streams"] == 50

        refused = client_for(server.port)
        assert refused.status == 503
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["content-type"].startswith("text/plain")
        assert "50 streams" in refused.body().decode()
        assert sse.stats["streams_refused"] == 1
        events = itertools.count()

        def delivery() -> float:
            """Seconds from sending an event to its arrival at the last of the 50 served clients."""
            n = next(events)
            sent = time.monotonic()
            sse.send_new_event(data=f"ev-{n}")
            number, arrived = readers.stdout.readline().split()  # type: ignore[union-attr]
            assert int(number) == n
            return float(arrived) - sent

        def during_flood(path: str) -> tuple[list[float], dict[str, int]]:
            flood = subprocess.Popen(
                [sys.executable, "-c", FLOOD, str(server.port), "500", "25", path], stdout=subprocess.PIPE, text=True
            )
            floods.append(flood)
            assert flood.stdout is not None and flood.stdout.readline().strip() == "started"
            times = []
            while flood.poll() is None or len(times) < 5:
                times.append(delivery())
            return times, json.loads(flood.stdout.read())

        before = [delivery() for _ in range(30)]
        control, control_statuses = during_flood("/busy")
        during, statuses = during_flood("/stream")
        # Asked while the readers still hold their connections: once they are
        # killed, their streams are freed at once (their FINs are seen).
        streams_after_floods = sse.stats["streams"]
    finally:
        for process in [readers, *floods]:
            process.kill()
            process.communicate(timeout=10)
    assert control_statuses == {"503": 500}, control_statuses
    assert statuses == {"503": 500}, statuses
    assert sse.stats["streams_refused"] == 501
    assert streams_after_floods == 50

    # The flood takes the server's CPU (this machine has two, shared with the
    # flood): events wait their turn in the event loop behind the flood's
    # requests, as they would behind any requests, but delivery never stalls.
    # (How much a refused stream costs beside the app's cheapest refusal is a
    # measurement, not a test: on these shared machines the medians vary
    # several-fold from run to run, for either kind of refusal.)
    typical = {
        name: statistics.median(times) for name, times in [("before", before), ("control", control), ("during", during)]
    }
    figures = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in typical.items())
    assert max(during) < 1.0, f"an event took {max(during):.3f} s to reach the 50 clients during the flood: {figures}"
