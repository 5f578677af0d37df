"""Soak test: a real deployment under browser-like churn for minutes, then an audit.

Starts a private redis-server and ``gunicorn -k gevent -w 4`` serving
``tests/apps/basic.py`` on Redis, then, for ``--minutes``:

- ``--clients`` logical clients (2,000) behave like browsers: each opens a
  stream, stays for a random life, leaves (mostly with a FIN, sometimes with a
  RST) and comes back after a random delay with ``Last-Event-ID`` set to the
  last id it saw. They run in ``--client-procs`` processes, each a
  ``selectors`` loop over raw non-blocking sockets (HTTP/1.1 and chunked
  decoding by hand);
- one publisher sends events through ``POST /publish`` at ``--rate`` per
  second, two of every three id'd (stored) and the rest live.

Then every client comes back one last time and reads up to the last id sent,
and the script checks and prints:

- every logical client got every id'd event exactly once and in order across
  all its connections (no gap, no duplicate, no reset), up to the last id;
- live events never arrived twice or out of order on one connection, and how
  long they took to arrive;
- the RSS and open file descriptors of every worker, sampled after the warm-up
  and at the end (with the streams each held then), and their ratios;
- no worker restarted (the same pids at the start and at the end).

Not run in CI. From the repository root::

    .venv/bin/python bench/soak.py --minutes 10
    .venv/bin/python bench/soak.py --minutes 1 --clients 500     # a smoke run

Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import bisect
import errno
import heapq
import http.client
import itertools
import json
import multiprocessing
import os
import random
import resource
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.redis_server import RedisServer  # noqa: E402

CHANNEL = "soak"
#: Live-event latency histogram bucket bounds, in milliseconds.
BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, float("inf")]
QUANTILES = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)]


# -- one process of clients -------------------------------------------------------------------


class Client:
    """One logical client (a browser tab) across all its connections."""

    __slots__ = (
        "n", "sock", "generation", "raw", "body", "head_done", "chunk_left", "crlf_left", "connected_once",
        "last_id", "first_id", "ids", "gaps", "gap_examples", "duplicates", "resets", "connections",
        "with_last_event_id", "server_closed", "errors", "live", "live_last", "live_disorder", "state",
    )  # fmt: skip

    def __init__(self, n: int) -> None:
        self.n = n
        self.sock: socket.socket | None = None
        self.generation = 0  # timers of an earlier generation are stale
        self.state = "idle"  # idle | connecting | streaming
        self.raw = b""  # bytes not yet de-chunked
        self.body = b""  # de-chunked bytes not yet parsed into events
        self.head_done = False
        self.chunk_left = 0  # payload bytes of the current chunk still to come
        self.crlf_left = 0  # bytes of the CRLF after it still to skip
        self.connected_once = False
        self.last_id: int | None = None
        self.first_id: int | None = None
        self.ids = 0
        self.gaps = 0
        self.gap_examples: list[tuple[int, int]] = []
        self.duplicates = 0
        self.resets = 0
        self.connections = 0
        self.with_last_event_id = 0
        self.server_closed = 0
        self.errors: dict[str, int] = {}
        self.live = 0
        self.live_last = -1
        self.live_disorder = 0


def client_process(
    index: int,
    numbers: list[int],
    port: int,
    ramp: float,
    min_life: float,
    max_life: float,
    seed: int,
    finish: Any,
    final_id: Any,
    connected: Any,
    results: Any,
) -> None:
    """Run ``numbers`` logical clients until ``finish`` is set and each has ``final_id``; report on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random(seed)
    selector = selectors.DefaultSelector()
    clients = [Client(n) for n in numbers]
    timers: list[tuple[float, int, int, int, str]] = []  # (when, seq, client index, generation, what)
    seq = itertools.count()
    histogram = [0] * len(BUCKETS)
    started = time.monotonic()

    def schedule(delay: float, i: int, what: str) -> None:
        heapq.heappush(timers, (time.monotonic() + delay, next(seq), i, clients[i].generation, what))

    def record_error(client: Client, what: str) -> None:
        client.errors[what] = client.errors.get(what, 0) + 1

    def connect(i: int) -> None:
        client = clients[i]
        client.generation += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            record_error(client, f"connect {errno.errorcode.get(err, err)}")
            schedule(rng.uniform(0.5, 3.0), i, "connect")
            return
        client.sock, client.state = sock, "connecting"
        client.raw, client.body, client.head_done, client.chunk_left, client.crlf_left = b"", b"", False, 0, 0
        client.live_last = -1
        selector.register(sock, selectors.EVENT_WRITE, i)

    def disconnect(i: int, abortive: bool = False) -> None:
        client = clients[i]
        client.generation += 1
        sock, client.sock, client.state = client.sock, None, "idle"
        if sock is None:
            return
        selector.unregister(sock)
        if abortive:  # leave with a RST, as a crashed tab or a dropped network would look to the server
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def leave(i: int) -> None:
        disconnect(i, abortive=rng.random() < 0.1)
        schedule(rng.uniform(0.1, 3.0), i, "connect")

    def on_event(client: Client, block: bytes) -> None:
        event_id = event = data = None
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line.startswith(b"data: "):
                data = line[6:]
            elif line.startswith(b"event: "):
                event = line[7:]
        if event == b"sse-reset":
            client.resets += 1
            return
        if event_id is not None:
            if client.last_id is None:
                client.first_id = event_id
            elif event_id <= client.last_id:
                client.duplicates += 1
                return
            elif event_id != client.last_id + 1:
                client.gaps += event_id - client.last_id - 1
                if len(client.gap_examples) < 3:
                    client.gap_examples.append((client.last_id, event_id))
            client.ids += 1
            client.last_id = event_id
        elif data is not None and data.startswith(b"live-"):
            number, sent = data[5:].split(b" ")
            k = int(number)
            client.live += 1
            if k <= client.live_last:
                client.live_disorder += 1
            client.live_last = k
            latency = (time.time() - float(sent)) * 1000
            histogram[bisect.bisect_left(BUCKETS, latency)] += 1

    def on_readable(i: int) -> None:
        client = clients[i]
        assert client.sock is not None
        try:
            data = client.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            record_error(client, f"recv {type(error).__name__}")
            data = b""
        if not data:
            client.server_closed += 1
            disconnect(i)
            schedule(rng.uniform(0.1, 3.0), i, "connect")  # what a browser does after the end of a stream
            return
        client.raw += data
        if not client.head_done:
            if b"\r\n\r\n" not in client.raw:
                return
            head, client.raw = client.raw.split(b"\r\n\r\n", 1)
            status = head.split(b" ", 2)[1]
            if status != b"200" or b"chunked" not in head.lower():
                record_error(client, f"status {status.decode()}")
                disconnect(i)
                schedule(rng.uniform(1.0, 5.0), i, "connect")
                return
            client.head_done = True
            if not client.connected_once:
                client.connected_once = True
                with connected.get_lock():
                    connected.value += 1
        # De-chunk.
        raw = client.raw
        while raw:
            if client.chunk_left:
                take = raw[: client.chunk_left]
                client.body += take
                raw = raw[len(take) :]
                client.chunk_left -= len(take)
            elif client.crlf_left:
                skip = min(client.crlf_left, len(raw))
                raw = raw[skip:]
                client.crlf_left -= skip
            else:
                line_end = raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(raw[:line_end].split(b";")[0], 16)
                raw = raw[line_end + 2 :]
                if size == 0:
                    client.server_closed += 1
                    disconnect(i)
                    schedule(rng.uniform(0.1, 3.0), i, "connect")
                    return
                client.chunk_left, client.crlf_left = size, 2
        client.raw = raw
        # Events end with a blank line.
        body = client.body
        while (end := body.find(b"\n\n")) >= 0:
            block, body = body[:end], body[end + 2 :]
            if block and not block.startswith(b":"):
                on_event(client, block)
            elif block.startswith(b":") and b"\n" in block:  # a comment line, then fields
                fields = b"\n".join(line for line in block.split(b"\n") if not line.startswith(b":"))
                if fields:
                    on_event(client, fields)
        client.body = body

    def on_writable(i: int) -> None:
        client = clients[i]
        sock = client.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            record_error(client, f"connect {errno.errorcode.get(err, err)}")
            disconnect(i)
            schedule(rng.uniform(0.5, 3.0), i, "connect")
            return
        headers = [b"GET /stream?channel=%s HTTP/1.1" % CHANNEL.encode(), b"Host: soak", b"Accept: text/event-stream"]
        if client.last_id is not None:
            headers.append(b"Last-Event-ID: %d" % client.last_id)
            client.with_last_event_id += 1
        sock.send(b"\r\n".join(headers) + b"\r\n\r\n")  # small: the socket takes it whole
        client.connections += 1
        client.state = "streaming"
        selector.modify(sock, selectors.EVENT_READ, i)
        if not finish.is_set():
            schedule(rng.uniform(min_life, max_life), i, "leave")

    for i in range(len(clients)):
        schedule(i * ramp, i, "connect")
    finishing = False
    finish_deadline = 0.0
    while True:
        now = time.monotonic()
        if not finishing and finish.is_set():
            finishing = True
            finish_deadline = now + 120
            for i, client in enumerate(clients):
                client.generation += 1  # no more leaving
                if client.state == "idle":
                    connect(i)
        if finishing:
            target = final_id.value
            behind = [c for c in clients if c.last_id != target or c.state != "streaming"]
            if not behind or now > finish_deadline:
                break
        while timers and timers[0][0] <= now:
            _, _, i, generation, what = heapq.heappop(timers)
            if generation != clients[i].generation:
                continue
            if what == "connect":
                connect(i)
            elif what == "leave":
                leave(i)
        timeout = min(max(timers[0][0] - now, 0), 0.1) if timers else 0.1
        for key, mask in selector.select(timeout):
            if mask & selectors.EVENT_WRITE:
                on_writable(key.data)
            else:
                on_readable(key.data)

    report = {
        "process": index,
        "seconds": time.monotonic() - started,
        "histogram": histogram,
        "clients": [
            {
                "n": c.n,
                "first_id": c.first_id,
                "last_id": c.last_id,
                "ids": c.ids,
                "gaps": c.gaps,
                "gap_examples": c.gap_examples,
                "duplicates": c.duplicates,
                "resets": c.resets,
                "connections": c.connections,
                "with_last_event_id": c.with_last_event_id,
                "server_closed": c.server_closed,
                "errors": c.errors,
                "live": c.live,
                "live_disorder": c.live_disorder,
                "streaming": c.state == "streaming",
            }
            for c in clients
        ],
    }
    results.put(report)
    for i in range(len(clients)):
        disconnect(i)


# -- the deployment ---------------------------------------------------------------------------


@dataclass
class Sample:
    rss: int
    fds: int
    streams: int


@dataclass
class Publisher:
    port: int
    rate: float
    stop: threading.Event = field(default_factory=threading.Event)
    accepted_ids: list[int] = field(default_factory=list)
    live_sent: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)

    def run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        period = 1.0 / self.rate
        next_at = time.monotonic()
        for n in itertools.count():
            next_at += period
            if self.stop.wait(max(next_at - time.monotonic(), 0)):
                break
            with_id = n % 3 != 2
            if with_id:
                fields = {"data": f"stored-{n}", "id": "1", "channel": CHANNEL}
            else:
                fields = {"data": f"live-{self.live_sent} {time.time():.6f}", "channel": CHANNEL}
            started = time.monotonic()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request(
                    "POST",
                    "/publish",
                    urllib.parse.urlencode(fields),
                    {"Content-Type": "application/x-www-form-urlencoded"},
                )
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise RuntimeError(f"/publish answered {response.status}: {answer[:200]!r}")
            except Exception as error:  # noqa: BLE001 - counted, and the connection made again
                self.failures += 1
                print(f"publish failed: {error!r}", file=sys.stderr)
                if connection is not None:
                    connection.close()
                connection = None
                continue
            self.latencies.append(time.monotonic() - started)
            if with_id:
                self.accepted_ids.append(json.loads(answer)["id"])
            else:
                self.live_sent += 1
        if connection is not None:
            connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def sample(pid: int, port: int) -> Sample:
    process = psutil.Process(pid)
    streams = sum(
        1
        for c in process.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )
    return Sample(process.memory_info().rss, process.num_fds(), streams)


def percentile_from_histogram(histogram: list[int], fraction: float) -> str:
    total = sum(histogram)
    if not total:
        return "-"
    running = 0
    for bound, count in zip(BUCKETS, histogram, strict=True):
        running += count
        if running >= fraction * total:
            return f"<= {bound:g} ms" if bound != float("inf") else "> 10 s"
    return "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10, help="events published per second (2 of 3 id'd)")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--min-life", type=float, default=5, help="shortest stay of a client, seconds")
    parser.add_argument("--max-life", type=float, default=60, help="longest stay of a client, seconds")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the first sample (default: a fifth of the run, at most 60)",
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, duration / 5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = Path(tempfile.mkdtemp(prefix="sse-soak-"))
    redis_server = RedisServer(tmp)
    port = free_port()
    log_path = tmp / "gunicorn.log"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        SSE_REDIS_URL=redis_server.url,
        SSE_KEEPALIVE="5",
    )
    command = [
        sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(args.workers),
        "--worker-connections", str(args.clients * 2 + 100), "--backlog", "4096", "--no-control-socket",
        "--graceful-timeout", "5", "-b", f"127.0.0.1:{port}", "tests.apps.basic:create_app()",
    ]  # fmt: skip
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in the finally
    gunicorn = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    context = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    publisher = Publisher(port, args.rate)
    publisher_thread = threading.Thread(target=publisher.run, daemon=True)
    failures: list[str] = []
    try:
        wait_for_port(port, gunicorn)
        master = psutil.Process(gunicorn.pid)
        deadline = time.monotonic() + 30
        while len(master.children()) < args.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        time.sleep(1)
        workers_at_start = sorted(child.pid for child in master.children())
        print(
            f"soak: {args.minutes:g} min, {args.clients} clients in {args.client_procs} processes,"
            f" gunicorn -k gevent -w {args.workers} (pids {workers_at_start}), Redis on {redis_server.port},"
            f" {args.rate:g} events/s (2 of 3 id'd), lives {args.min_life:g}-{args.max_life:g} s, seed {seed}",
            flush=True,
        )

        finish = context.Event()
        final_id = context.Value("q", 0)
        connected = context.Value("i", 0)
        results = context.Queue()
        numbers = list(range(args.clients))
        for index in range(args.client_procs):
            share = numbers[index :: args.client_procs]
            process = context.Process(
                target=client_process,
                # Ramp up at 500 new connections a second in all.
                args=(
                    index,
                    share,
                    port,
                    args.client_procs / 500,
                    args.min_life,
                    args.max_life,
                    seed + index,
                    finish,
                    final_id,
                    connected,
                    results,
                ),
                daemon=True,
            )
            process.start()
            processes.append(process)
        publisher_thread.start()
        began = time.monotonic()

        while connected.value < args.clients:
            if time.monotonic() - began > 120:
                raise RuntimeError(f"only {connected.value} of {args.clients} clients connected in 2 minutes")
            time.sleep(0.2)
        print(f"all {args.clients} clients connected after {time.monotonic() - began:.1f} s", flush=True)
        while time.monotonic() - began < warmup:
            time.sleep(0.2)
        start_samples = {pid: sample(pid, port) for pid in workers_at_start}
        redis_start = psutil.Process(redis_server.process.pid).memory_info().rss  # type: ignore[union-attr]
        print(f"warm-up done at {time.monotonic() - began:.0f} s: first sample taken", flush=True)

        next_report = began + 60
        while time.monotonic() - began < duration:
            time.sleep(0.5)
            if time.monotonic() >= next_report:
                next_report += 60
                streams = {pid: sample(pid, port).streams for pid in workers_at_start if psutil.pid_exists(pid)}
                print(
                    f"  {time.monotonic() - began:5.0f} s: {len(publisher.accepted_ids)} id'd and"
                    f" {publisher.live_sent} live events sent, {publisher.failures} failed;"
                    f" streams per worker {list(streams.values())}",
                    flush=True,
                )
        end_samples = {pid: sample(pid, port) for pid in workers_at_start if psutil.pid_exists(pid)}
        redis_end = psutil.Process(redis_server.process.pid).memory_info().rss  # type: ignore[union-attr]
        publisher.stop.set()
        publisher_thread.join(15)
        with redis_server.client() as client:
            redis_last = int(client.get("{sse}:id") or 0)
        last_accepted = publisher.accepted_ids[-1] if publisher.accepted_ids else 0
        final_id.value = redis_last
        finish.set()
        reports = [results.get(timeout=180) for _ in processes]
        workers_at_end = sorted(child.pid for child in master.children())
        gunicorn_log = log_path.read_text(errors="replace")
    finally:
        publisher.stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        if gunicorn.poll() is None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            try:
                gunicorn.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(gunicorn.pid, signal.SIGKILL)
                gunicorn.wait(10)
        log_file.close()
        redis_server.stop()

    # -- the audit --------------------------------------------------------------------------
    clients = [c for report in reports for c in report["clients"]]
    histogram = [sum(column) for column in zip(*(report["histogram"] for report in reports), strict=True)]
    accepted = publisher.accepted_ids
    if not accepted:
        failures.append("no id'd event was published")
    elif accepted != list(range(accepted[0], accepted[-1] + 1)):
        failures.append("the ids /publish returned are not consecutive")
    if redis_last != last_accepted:
        failures.append(f"Redis's last id {redis_last} is not the last id /publish returned {last_accepted}")
    complete = [c for c in clients if c["last_id"] == redis_last and c["streaming"]]
    exact = [
        c
        for c in clients
        if c["gaps"] == 0 and c["duplicates"] == 0 and c["resets"] == 0 and c["last_id"] == redis_last
        and c["ids"] == redis_last - (c["first_id"] or 0) + 1
    ]  # fmt: skip
    reconnected = [c for c in clients if c["with_last_event_id"] > 0]
    reconnected_exact = [c for c in reconnected if c in exact]
    errors: dict[str, int] = {}
    for c in clients:
        for what, count in c["errors"].items():
            errors[what] = errors.get(what, 0) + count
    if len(exact) != len(clients):
        bad = [c for c in clients if c not in exact][:5]
        failures.append(f"{len(clients) - len(exact)} clients missed, repeated or reordered id'd events, e.g. {bad}")
    if not reconnected:
        failures.append("no client reconnected with Last-Event-ID")
    if sum(c["resets"] for c in clients):
        failures.append(f"{sum(c['resets'] for c in clients)} reset events")
    if sum(c["live_disorder"] for c in clients):
        failures.append(f"{sum(c['live_disorder'] for c in clients)} live events repeated or out of order")
    if workers_at_end != workers_at_start:
        failures.append(f"workers changed: {workers_at_start} -> {workers_at_end}")
    if publisher.failures:
        failures.append(f"{publisher.failures} publishes failed")
    for marker in ("Traceback", "WORKER TIMEOUT", "Worker exiting", "Exception on"):
        if marker in gunicorn_log:
            failures.append(f"gunicorn log has {marker!r}")

    # -- the summary ----------------------------------------------------------------------------
    mib = 1024 * 1024
    lat = sorted(publisher.latencies)
    print()
    print("=" * 100)
    print(f"SOAK SUMMARY  ({args.minutes:g} min, {args.clients} clients, {args.workers} workers, seed {seed})")
    print("-" * 100)
    total = {key: sum(c[key] for c in clients) for key in clients[0] if isinstance(clients[0][key], int)}
    first, last = (accepted[0], accepted[-1]) if accepted else ("-", "-")
    rows = [
        ("events published", f"{len(accepted)} id'd (ids {first}..{last}), {publisher.live_sent} live,"
         f" {publisher.failures} failed"),
        ("connections made", f"{total['connections']} ({total['with_last_event_id']} with Last-Event-ID)"),
        ("streams ended by the server", total["server_closed"]),
        ("client errors", errors or "none"),
        ("id'd events received (all clients)", total["ids"]),
        ("clients caught up to the last id", f"{len(complete)} / {len(clients)}"),
        ("exactly once, in order, no gap", f"{len(exact)} / {len(clients)} (gaps {total['gaps']},"
         f" duplicates {total['duplicates']}, resets {total['resets']})"),
        ("... of those that reconnected w/ LEI", f"{len(reconnected_exact)} / {len(reconnected)}"),
        ("live events received", f"{total['live']}, repeated or out of order {total['live_disorder']}"),
        ("live delivery latency", ", ".join(
            f"{name} {percentile_from_histogram(histogram, q)}" for name, q in QUANTILES
        )),
    ]  # fmt: skip
    if lat:
        p99 = lat[int(len(lat) * 0.99)]
        rows.insert(1, ("/publish latency", f"p50 {statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
                                            f" max {lat[-1] * 1000:.1f} ms"))  # fmt: skip
    for label, value in rows:
        print(f"{label:38} {value}")
    print("-" * 100)
    print(
        f"{'worker':>8} {'streams':>12} {'RSS MiB':>16} {'ratio':>6} {'fds':>12} {'ratio':>6}"
        f" {'fds - streams':>14} {'same pid':>9}"
    )
    for pid in workers_at_start:
        start, end = start_samples[pid], end_samples.get(pid)
        if end is None:
            print(f"{pid:>8} {'(gone)':>12}")
            continue
        print(
            f"{pid:>8} {f'{start.streams} -> {end.streams}':>12}"
            f" {f'{start.rss / mib:.1f} -> {end.rss / mib:.1f}':>16} {end.rss / start.rss:>6.2f}"
            f" {f'{start.fds} -> {end.fds}':>12} {end.fds / start.fds:>6.2f}"
            f" {f'{start.fds - start.streams} -> {end.fds - end.streams}':>14}"
            f" {'yes' if pid in workers_at_end else 'NO':>9}"
        )
    redis_rss = f"{redis_start / mib:.1f} -> {redis_end / mib:.1f}"
    print(f"{'redis':>8} {'':>12} {redis_rss:>16} {redis_end / redis_start:>6.2f}")
    print("-" * 100)
    print("RESULT:", "PASS" if not failures else "FAIL")
    for failure in failures:
        print("  -", failure)
    print(f"(gunicorn log kept in {log_path})")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
