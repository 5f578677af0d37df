"""Reconnect storms: 19,000 streams on one gunicorn gevent worker with Redis, and three ways to make them come back.

    BENCH_HOME=$PWD/bench/.home bench/.home/.venv/bin/python bench/storm.py --storms redis,sigterm,end \\
        [--streams 19000] [--versions now=.,before=/tmp/before] [--seconds 60]

Each run starts a private redis-server and ``gunicorn -k gevent -w 1`` serving
bench/storm_app.py (with ``PYTHONPATH`` set to a version's checkout, to put
two versions side by side in one invocation), fills 10 channels with 1,000
stored events of 200 bytes, and opens the streams from one epoll loop:
5,000 on channel ``c0`` and the rest spread over ``c1`` … ``c9``, each
resuming from the last id (so nothing is replayed at first). The clients
behave as a browser's ``EventSource``: after a clean end or a broken
connection they wait the last ``retry:`` they were sent (3 s without one,
Chromium's default) and come back with ``Last-Event-ID``. During the run an
id'd marker goes to one channel every 20 ms (each carries its send time).
Then one storm:

- ``redis``: redis-server killed and started again empty on its port;
- ``sigterm``: the worker gets SIGTERM; gunicorn starts another;
- ``end``: ``end_streams(channel="c0")``: 5,000 streams.

Reported: streams that the server ended; the most in one second (Unix) of
the moments the clients meant to come back (their end + their retry), of
their connections, and of the authorizer's calls (from every worker process
that ran; ``STORM_DUMP=file`` appends all three in 100 ms bins); reads of the
store (``store_reads``, where the version has it) and Redis's calls and CPU
during the storm; the seconds until every client has received a marker sent
after its last reconnection; markers of a client's channel accepted during
the storm that it never received (0 expected); and the p99 of a marker's
latency to the clients that were connected when it was sent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port  # noqa: E402

CHANNELS = [f"c{n}" for n in range(10)]
#: Chromium's reconnection time when the server sent no retry:.
DEFAULT_RETRY = 3.0
MARKER = re.compile(rb"id: (\d+)\ndata: m (\d+)\n")
RETRY = re.compile(rb"(?m)^retry: (\d+)$")
RESET = b"event: sse-reset"


@dataclass
class Client:
    channel: str
    last_id: int
    sock: socket.socket | None = None
    tail: bytes = b""
    retry: float = DEFAULT_RETRY
    reconnect_at: float | None = None
    connected_at: float = 0.0
    ends: int = 0
    #: Moments (time.time()) a reset event arrived.
    reset_at: list[float] = field(default_factory=list)
    #: Whether the server told it a retry: (a planned end spreads them).
    told_retry: int = 0
    received: set[int] = field(default_factory=set)
    #: (marker id, seconds after its send) of each marker received.
    latencies: list[tuple[int, float]] = field(default_factory=list)
    #: Moments (time.time()) it meant to come back (its end + its retry), and moments it connected.
    planned: list[float] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)


class Crowd:
    """Browser-like clients in one epoll loop, in a thread of their own."""

    def __init__(self, port: int, clients: list[Client]) -> None:
        self.port, self.clients = port, clients
        self.poller = select.epoll()
        self.by_fd: dict[int, Client] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def connect(self, client: Client) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), 5)
        except OSError:
            client.reconnect_at = time.monotonic() + client.retry
            return
        request = (
            f"GET /stream?channel={client.channel} HTTP/1.1\r\nHost: storm\r\nAccept: text/event-stream\r\n"
            f"Last-Event-ID: {client.last_id}\r\n\r\n"
        )
        sock.sendall(request.encode())
        sock.setblocking(False)
        client.sock, client.tail, client.connected_at, client.reconnect_at = sock, b"", time.time(), None
        client.connects.append(client.connected_at)
        self.by_fd[sock.fileno()] = client
        self.poller.register(sock.fileno(), select.EPOLLIN)

    def run(self) -> None:
        while not self.stopping.is_set():
            for fd, _ in self.poller.poll(0.05):
                self._read(self.by_fd[fd])
            now = time.monotonic()
            for client in self.clients:
                if client.reconnect_at is not None and client.reconnect_at <= now:
                    self.connect(client)

    def _read(self, client: Client) -> None:
        assert client.sock is not None
        try:
            data = client.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._ended(client)
            return
        now = time.time_ns()
        text = client.tail + data
        for match in MARKER.finditer(text):
            id = int(match[1])
            if id not in client.received:
                client.received.add(id)
                if int(match[2]) >= client.connected_at * 1e9:  # live, not replayed
                    client.latencies.append((id, (now - int(match[2])) / 1e9))
            client.last_id = max(client.last_id, id)
        for match in RETRY.finditer(text):
            client.retry, client.told_retry = int(match[1]) / 1000, client.told_retry + 1
        if RESET in data:
            client.reset_at += [time.time()] * data.count(RESET)
        client.tail = text[-120:]

    def _ended(self, client: Client) -> None:
        assert client.sock is not None
        self.poller.unregister(client.sock.fileno())
        del self.by_fd[client.sock.fileno()]
        client.sock.close()
        client.sock, client.ends = None, client.ends + 1
        client.reconnect_at = time.monotonic() + client.retry
        client.planned.append(time.time() + client.retry)


class Deployment:
    def __init__(self, source: Path, directory: Path, spread: str | None) -> None:
        self.directory = directory
        self.redis_port, self.port = free_port(), free_port()
        self.redis = self._redis()
        env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0", "STORM_DIR": str(directory),
               "PYTHONPATH": f"{source}{os.pathsep}{HERE}"}  # fmt: skip
        if spread is not None:
            env["SSE_RECONNECT_SPREAD"] = spread
        command = (
            f"ulimit -Sn $(ulimit -Hn) && exec {sys.executable} -m gunicorn -k gevent -w 1 --worker-connections 25000"
            f" --backlog 4096 --graceful-timeout 5 --no-control-socket -b 127.0.0.1:{self.port} storm_app:app"
        )
        log = (directory / "gunicorn.log").open("w")
        self.gunicorn = subprocess.Popen(["bash", "-c", command], env=env, stdout=log, stderr=log,
                                         start_new_session=True, cwd=HERE)  # fmt: skip
        try:
            self.wait(lambda: self.request("GET", "/numbers") is not None, 30)
        except TimeoutError:
            self.stop()
            raise

    def _redis(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--maxclients", "20000", "--loglevel", "warning", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.wait(lambda: self.redis_info() is not None, 10)
        return process

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.wait()
        self.redis = self._redis()

    def worker(self) -> int:
        return int(psutil.Process(self.gunicorn.pid).children(recursive=True)[0].pid)

    def request(self, method: str, path: str, body: bytes | None = None) -> dict | None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    def redis_info(self) -> dict[str, str] | None:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), 2) as sock:
                sock.sendall(b"INFO\r\n")
                data = b""
                while not data.endswith(b"\r\n\r\n") and b"# Keyspace" not in data:
                    data += sock.recv(65536)
        except OSError:
            return None
        return dict(line.split(":", 1) for line in data.decode().splitlines() if ":" in line)

    def authorizations(self, since: float) -> list[tuple[float, int]]:
        """(Unix moment, calls) per 100 ms from ``since``, from every worker process that ran."""
        return [(float(moment), n) for path in self.directory.glob("auth-*.json")
                for moment, n in json.loads(path.read_text()).items() if float(moment) >= since]  # fmt: skip

    def authorizer_calls(self, since: float) -> Counter[int]:
        """Calls per second (Unix) from ``since``."""
        per_second: Counter[int] = Counter()
        for moment, n in self.authorizations(since):
            per_second[int(moment)] += n
        return per_second

    def authorizer_window_peak(self, since: float) -> int:
        """The most calls in any ten consecutive 100 ms bins from ``since`` (a second wherever it starts)."""
        bins: Counter[int] = Counter()
        for moment, n in self.authorizations(since):
            bins[round(moment * 10)] += n
        return max((sum(bins[start + k] for k in range(10)) for start in bins), default=0)

    @staticmethod
    def wait(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the deployment did not come up")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in (self.gunicorn, self.redis):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


class Markers(threading.Thread):
    """An id'd marker to one channel after another every ``interval`` seconds: (id, channel, sent at) of each."""

    def __init__(self, deployment: Deployment, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.deployment, self.interval = deployment, interval
        self.sent: list[tuple[int, str, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(self.interval):
            channel = CHANNELS[n % len(CHANNELS)]
            n += 1
            at = time.time()
            answer = self.deployment.request("POST", f"/publish?channel={channel}&id", b"m %d" % time.time_ns())
            if answer is not None and answer.get("id"):
                self.sent.append((answer["id"], channel, at))


def run_storm(storm: str, source: Path, streams: int, seconds: float, spread: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="storm-") as directory:
        deployment = Deployment(source, Path(directory), spread)
        try:
            return _drive(deployment, storm, streams, seconds)
        finally:
            deployment.stop()
            if os.environ.get("STORM_DUMP"):  # and the worker's log beside it
                with open(os.environ["STORM_DUMP"] + ".log", "a") as log:
                    log.write((Path(directory) / "gunicorn.log").read_text())


def _drive(deployment: Deployment, storm: str, streams: int, seconds: float) -> dict[str, object]:
    last = 0
    for channel in CHANNELS:
        last = deployment.request("POST", f"/fill?channel={channel}&n=1000&size=200")["last"]  # type: ignore[index]
    channels = ["c0"] * min(5000, streams) + [CHANNELS[1 + n % 9] for n in range(max(0, streams - 5000))]
    clients = [Client(channel, last) for channel in channels]
    crowd = Crowd(deployment.port, clients)
    for client in clients:
        crowd.connect(client)
    reader = threading.Thread(target=crowd.run, daemon=True)
    reader.start()
    markers = Markers(deployment)
    markers.start()
    _until(lambda: all(client.received for client in clients), 120, "every stream to get a marker")
    if os.environ.get("STORM_FREEZE"):  # the worker's collector no longer scans what the streams hold so far
        deployment.request("POST", "/freeze")
    before = _numbers(deployment)
    answer = deployment.request("GET", "/numbers?objects=25") or {}
    objects = answer.get("objects") or 0
    if os.environ.get("STORM_DUMP"):
        with open(os.environ["STORM_DUMP"] + ".kinds", "a") as out:
            out.write(json.dumps({kind: round(n / len(clients), 1) for kind, n in answer.get("kinds", [])}) + "\n")
    started = time.time()
    ends = sum(client.ends for client in clients)
    _trigger(deployment, storm)
    resumed = _until(lambda: _resumed(clients, markers, started), seconds, "every client to resume")
    markers.stopping.set()
    markers.join()
    time.sleep(1.0)  # the last markers arrive
    crowd.stopping.set()
    reader.join()
    after = _numbers(deployment)
    return {**_report(deployment, clients, markers, started, resumed, ends, before, after),
            "objects tracked per stream": round(objects / len(clients))}  # fmt: skip


def _trigger(deployment: Deployment, storm: str) -> None:
    if storm == "redis":
        deployment.restart_redis()
    elif storm == "sigterm":
        os.kill(deployment.worker(), signal.SIGTERM)
    else:
        deployment.request("POST", "/end?channel=c0")


def _resumed(clients: list[Client], markers: Markers, started: float) -> bool:
    """Every client is connected and has received a marker of its channel sent after its last connection."""
    by_channel: dict[str, list[tuple[int, float]]] = {}
    for id, channel, at in list(markers.sent):
        if at > started:
            by_channel.setdefault(channel, []).append((id, at))
    for client in clients:
        if client.sock is None:
            return False
        since = max(started, client.connected_at)
        for id, at in reversed(by_channel.get(client.channel, [])):
            if at <= since:
                return False
            if id in client.received:
                break
        else:
            return False
    return True


def _until(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not after {timeout} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def _numbers(deployment: Deployment) -> dict[str, float]:
    info = deployment.redis_info() or {}
    answer = deployment.request("GET", "/numbers") or {}
    stats = answer.get("stats", {})
    return {
        "redis_cpu": float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0)),
        "redis_calls": float(info.get("total_commands_processed", 0)),
        "store_reads": float(stats.get("store_reads", float("nan"))),
        "pid": float(answer.get("pid", 0)),
        "redis_run": float(int(info.get("run_id", "0").strip() or "0", 16) % (1 << 52)),
    }


def _grown(before: dict[str, float], after: dict[str, float], name: str, anew: str) -> float:
    """What ``name`` grew by; all of ``after`` if its counter began again (``anew`` went back: restarted)."""
    return after[name] if after[anew] != before[anew] else after[name] - before[name]


def _report(deployment, clients, markers, started, resumed, ends, before, after) -> dict[str, object]:  # type: ignore[no-untyped-def]
    during = deployment.authorizer_calls(started)
    missed = 0
    for client in clients:
        owed = {id for id, channel, at in markers.sent if channel == client.channel and at > started}
        missed += len(owed - client.received)
    latencies = [seconds for client in clients for id, seconds in client.latencies if id > 0]
    planned = Counter(int(at) for client in clients for at in client.planned if at >= started)
    connects = Counter(int(at) for client in clients for at in client.connects if at >= started)
    if os.environ.get("STORM_DUMP"):  # 100 ms bins, for a closer look
        _dump(Path(os.environ["STORM_DUMP"]), deployment, clients, started)
    return {
        "streams ended": sum(client.ends for client in clients) - ends,
        "resets before": sum(1 for client in clients for at in client.reset_at if at < started),
        "resets during": sum(1 for client in clients for at in client.reset_at if at >= started),
        "told a retry": sum(1 for client in clients if client.told_retry),
        "authorizer calls": sum(during.values()),
        "planned peak /s": max(planned.values(), default=0),
        "connects peak /s": max(connects.values(), default=0),
        "authorizer peak /s": max(during.values(), default=0),
        "authorizer peak in any 1 s": deployment.authorizer_window_peak(started),
        "store reads": _grown(before, after, "store_reads", "pid"),
        "Redis calls": _grown(before, after, "redis_calls", "redis_run"),
        "Redis CPU s": round(_grown(before, after, "redis_cpu", "redis_run"), 2),
        "resumed after s": round(resumed, 2),
        "markers missed": missed,
        "p99 latency ms": round(1000 * statistics.quantiles(latencies, n=100)[98], 1) if len(latencies) > 100 else 0,
    }


def _dump(path: Path, deployment: Deployment, clients: list[Client], started: float) -> None:
    def bins(moments: list[float]) -> dict[str, int]:
        counted = Counter(round(at - started, 1) for at in moments if at >= started)
        return {str(at): counted[at] for at in sorted(counted)}

    authorized = [moment for moment, n in deployment.authorizations(started) for _ in range(n)]
    pauses = [pause for path in deployment.directory.glob("gc-*.json") for pause in json.loads(path.read_text())]
    with path.open("a") as out:
        out.write(json.dumps({
            "gc pauses": [(round(at - started, 2), generation, took) for at, generation, took in pauses
                          if at >= started - 1],
            "planned": bins([at for client in clients for at in client.planned]),
            "connects": bins([at for client in clients for at in client.connects]),
            "authorized": bins(authorized),
        }) + "\n")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storms", default="redis,sigterm,end")
    parser.add_argument("--streams", type=int, default=19000)
    parser.add_argument("--seconds", type=float, default=90.0, help="at most this long for every client to resume")
    parser.add_argument("--versions", default=f"now={ROOT}", help="name=checkout,... (PYTHONPATH of the app)")
    parser.add_argument("--spread", default=None, help="SSE_RECONNECT_SPREAD for the app")
    args = parser.parse_args()
    versions = [item.split("=", 1) for item in args.versions.split(",")]
    rows = []
    for storm in args.storms.split(","):
        for name, source in versions:
            print(f"{storm} / {name} ...", flush=True)
            result = run_storm(storm, Path(source), args.streams, args.seconds, args.spread)
            print(json.dumps(result), flush=True)
            rows.append((storm, name, result))
    keys = list(rows[0][2])
    print("\n| storm | version | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for storm, name, result in rows:
        print(f"| {storm} | {name} | " + " | ".join(str(result[key]) for key in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
