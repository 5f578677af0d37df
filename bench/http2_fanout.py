"""HTTP/2 fan-out against our HTTP/1.1 target, in the same run: CPU per delivery and RSS per idle stream.

The shared harness's driver speaks HTTP/1.1 only, so this script is the
HTTP/2 driver mode. It starts, in turn, the targets of ``bench/targets.conf``:

- ``h1``: ``sse-stream-gunicorn`` (HTTP/1.1, with direct writes);
- ``h1-iter``: the same with ``SSE_DIRECT_WRITES=0`` (every event through the WSGI iterator, as on HTTP/2);
- ``h2c``: ``sse-stream-h2`` driven over HTTP/2 with prior knowledge, 100 streams per connection.

Each is pinned to CPU 1 (the driver to CPU 0), gets N streams, a probe event
until every stream has one, then M events of 100 bytes published one at a
time (the next once every stream has the last: a closed loop, as the
harness's window 1). CPU is the server tree's ``schedstat`` time in the
publish phase; RSS per idle stream is the tree's RSS with N idle streams
minus before, over N. Run from the repository root::

    .venv/bin/python bench/http2_fanout.py --clients 1000 --events 200 --reps 3
"""

from __future__ import annotations

import argparse
import http.client
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import psutil

HERE = Path(__file__).resolve().parent
MARK = b"data: e"
WINDOW = 1 << 24


def target_command(name: str) -> str:
    for line in (HERE / "targets.conf").read_text().splitlines():
        if line.startswith(name + " "):
            return line[len(name) :].strip()
    raise SystemExit(f"no target {name!r} in bench/targets.conf")


TARGETS = {
    "h1": ("sse-stream-gunicorn", {}, "h1"),
    "h1-iter": ("sse-stream-gunicorn", {"SSE_DIRECT_WRITES": "0"}, "h1"),
    "h2c": ("sse-stream-h2", {}, "h2"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = target_command(name)
    if shutil.which("taskset"):
        command = command.replace("exec gunicorn", "exec taskset -c 1 gunicorn")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    full_env = dict(os.environ, PORT=str(port), PATH=path, SSE_KEEPALIVE="300", **env)
    process = subprocess.Popen(["bash", "-c", command], cwd=HERE, env=full_env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not listen on {port}")


def tree(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    root = psutil.Process(process.pid)
    return [root, *root.children(recursive=True)]


def cpu_ns(process: subprocess.Popen[bytes]) -> int:
    total = 0
    for proc in tree(process):
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except OSError:
                pass
    return total


def rss(process: subprocess.Popen[bytes]) -> int:
    return sum(proc.memory_info().rss for proc in tree(process))


class Driver:
    """N streams over HTTP/1.1 (one connection each) or HTTP/2 (100 per connection); counts events per stream."""

    def __init__(self, port: int, clients: int, protocol: str) -> None:
        self.selector = selectors.DefaultSelector()
        self.counts: list[int] = []
        self.tails: list[bytes] = []
        self.h2: dict[socket.socket, tuple[Any, dict[int, int]]] = {}
        per = 1 if protocol == "h1" else 100
        for first in range(0, clients, per):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            if protocol == "h1":
                self.h2_free(sock, first)
            else:
                self.h2_open(sock, first, min(per, clients - first))

    def h2_free(self, sock: socket.socket, index: int) -> None:
        self.counts.append(0)
        self.tails.append(b"")
        sock.sendall(b"GET /stream?channel=bench HTTP/1.1\r\nHost: bench\r\n\r\n")
        self.selector.modify(sock, selectors.EVENT_READ, index)

    def h2_open(self, sock: socket.socket, first: int, count: int) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW}
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(WINDOW)
        streams = {}
        for n in range(count):
            stream_id = conn.get_next_available_stream_id()
            path = [(":method", "GET"), (":path", "/stream?channel=bench"), (":scheme", "http"), (":authority", "b")]
            conn.send_headers(stream_id, path, end_stream=True)
            streams[stream_id] = first + n
            self.counts.append(0)
            self.tails.append(b"")
        self.h2[sock] = (conn, streams)
        sock.setblocking(True)
        sock.sendall(conn.data_to_send())
        sock.setblocking(False)

    def _count(self, index: int, data: bytes) -> None:
        tail = self.tails[index]
        joined = tail + data
        self.counts[index] += joined.count(MARK) - tail.count(MARK)
        self.tails[index] = joined[-(len(MARK) - 1) :]

    def pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            sock: Any = key.fileobj
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            if sock not in self.h2:
                self._count(key.data, data)
                continue
            conn, streams = self.h2[sock]
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self._count(streams[event.stream_id], event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            out = conn.data_to_send()
            if out:
                sock.setblocking(True)
                sock.sendall(out)
                sock.setblocking(False)

    def wait_all(self, count: int, stall: float = 5.0) -> bool:
        deadline = time.monotonic() + stall
        while min(self.counts) < count:
            if time.monotonic() > deadline:
                return False
            self.pump(0.05)
        return True

    def quiet(self, seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(0.05)

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def run_one(label: str, clients: int, events: int) -> dict[str, float]:
    name, env, protocol = TARGETS[label]
    port = free_port()
    server = start(name, port, env)
    publisher = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def publish(data: str) -> None:
        publisher.request("POST", "/publish?channel=bench", body=data.encode())
        publisher.getresponse().read()

    try:
        publish("warm-up")
        time.sleep(0.5)
        before = rss(server)
        driver = Driver(port, clients, protocol)
        seq = 0
        while True:  # probes until every stream is subscribed
            publish(f"e{seq} probe")
            seq += 1
            if driver.wait_all(1, stall=0.5):
                break
        driver.quiet()
        idle = (rss(server) - before) / clients
        base = list(driver.counts)
        stalls = 0
        cpu = cpu_ns(server)
        started = time.monotonic()
        for n in range(events):
            publish(f"e{seq} " + "x" * 96)
            seq += 1
            if not driver.wait_all(min(base) + n + 1):
                stalls += 1
        wall = time.monotonic() - started
        used = cpu_ns(server) - cpu
        lost = sum(max(0, b + events - c) for b, c in zip(base, driver.counts, strict=True))
        driver.close()
        deliveries = clients * events
        return {"cpu_us": used / 1000 / deliveries, "rss_kib": idle / 1024, "deliv_s": deliveries / wall,
                "lost": lost, "stalls": stalls}  # fmt: skip
    finally:
        publisher.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--targets", default="h1,h1-iter,h2c")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        os.sched_setaffinity(0, {0})
    labels = args.targets.split(",")
    results: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    for _ in range(args.reps):  # interleaved, to spread drift over the targets
        for label in labels:
            results[label].append(run_one(label, args.clients, args.events))
    floor = statistics.median(r["cpu_us"] for r in results[labels[0]])
    floor_rss = statistics.median(r["rss_kib"] for r in results[labels[0]])
    print(f"{args.clients} streams, {args.events} events of 100 bytes, median of {args.reps}\n")
    print("| target | CPU µs / delivery | deliv/s | RSS KiB / idle stream | lost / stalls |")
    print("|---|---|---|---|---|")
    for label in labels:
        runs = results[label]
        cpu = statistics.median(r["cpu_us"] for r in runs)
        kib = statistics.median(r["rss_kib"] for r in runs)
        rate = statistics.median(r["deliv_s"] for r in runs)
        lost, stalls = sum(r["lost"] for r in runs), sum(r["stalls"] for r in runs)
        print(f"| {label} | {cpu:.1f} ({cpu / floor:.1f}×) | {rate:,.0f} | {kib:.1f} ({kib / floor_rss:.1f}×) "
              f"| {lost:.0f} / {stalls:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
