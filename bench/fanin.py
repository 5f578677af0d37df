"""CPU a Redis-backed worker spends per message its subscription receives, at a fixed send rate.

One gunicorn gevent worker on Redis (a target of targets.conf whose command
uses `with_redis`) holds one stream, on channel `mine`. Another process sends
id'd events with `send_new_event` at `--rate` per second, first on a channel
the worker does not serve (it receives and drops them), then on `mine` (it
delivers each to its one stream). The worker's CPU time (all its threads,
from /proc/PID/task/*/schedstat) over the sends, divided by the messages, is
the cost per received message. Beside it, in the same run, an in-process
target's CPU per delivery: `--streams` streams receive events sent with
`POST /publish` (so the request's own cost is shared by the streams).

    BENCH_HOME=$PWD/bench/.home .venv/bin/python bench/fanin.py \\
        --redis-target sse-stream-redis --memory-target sse-stream-gunicorn --messages 10000 --rate 2000

With `SSE_REDIS_SUBSCRIBE=app` in the environment, the worker and the sender
use the whole-app subscription (the worker then receives every message).

`--sender-path` puts a folder first on the sender's PYTHONPATH (a checkout of
an older version, with the targets of that checkout).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from targets import publish, read_targets, running

HERE = Path(__file__).resolve().parent
SENDER = """
import os, sys, time
from flask import Flask
from flask_sse_stream import SSE
url, channel, count, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
app = Flask("sender"); app.config["SSE_REDIS_URL"] = url
app.config["SSE_REDIS_SUBSCRIBE"] = os.environ.get("SSE_REDIS_SUBSCRIBE", "channels")  # as the worker's
sse = SSE(app)
start = time.monotonic()
for n in range(count):
    sse.send_new_event(data=f"e{n} " + "x" * 90, id=True, channel=channel)
    ahead = start + (n + 1) / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
"""


class Reader(threading.Thread):
    """A stream on ``channel``, drained by a thread that counts the events it receives."""

    def __init__(self, port: int, channel: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"GET /stream?channel={channel} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        self.events = 0
        self.start()

    def run(self) -> None:
        tail = b""
        try:
            while data := self.sock.recv(1 << 20):
                data = tail + data
                self.events += data.count(b"\ndata: e")
                tail = data[-8:]
        except OSError:
            pass  # closed at the end of the case

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.events < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.events} of {count} events arrived")
            time.sleep(0.01)


def cpu_seconds(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def worker_of(port: int) -> int:
    """The gunicorn worker that listens on ``port``: the child of the master, with the master's command line."""
    for process in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = process.info["cmdline"] or []
        if any(part.endswith("gunicorn") for part in cmdline) and f"127.0.0.1:{port}" in cmdline:
            if psutil.Process(process.info["ppid"]).cmdline() == cmdline:
                return int(process.pid)
    raise RuntimeError(f"no gunicorn worker for port {port}")


def send(url: str, channel: str, count: int, rate: float, path: str | None) -> None:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    subprocess.run([sys.executable, "-c", SENDER, url, channel, str(count), str(rate)], check=True, env=env)


def redis_case(command: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    with running(command, folder) as port:
        url = f"redis://127.0.0.1:{port + 1}/0"
        reader = Reader(port, "mine")
        send(url, "mine", 100, args.rate, args.sender_path)  # warm up: subscribed, first costs paid
        reader.wait_for(100)
        worker = worker_of(port)
        figures = {}
        for case, channel in (("drop", "elsewhere"), ("deliver", "mine")):
            before_events, before = reader.events, cpu_seconds(worker)
            send(url, channel, args.messages, args.rate, args.sender_path)
            if channel == "mine":
                reader.wait_for(before_events + args.messages)
            time.sleep(0.5)  # what is still queued in the worker is processed
            figures[case] = (cpu_seconds(worker) - before) / args.messages * 1e6
        reader.sock.close()
        return figures


def memory_case(command: str, folder: Path, args: argparse.Namespace) -> float:
    with running(command, folder) as port:
        readers = [Reader(port, "bench") for _ in range(args.streams)]
        publish(port, b"e-warm")
        for reader in readers:
            reader.wait_for(1)
        worker = worker_of(port)
        before = cpu_seconds(worker)
        for n in range(args.events):
            publish(port, f"e{n} {'x' * 90}".encode(), with_id=n)
        for reader in readers:
            reader.wait_for(args.events + 1)
        spent = cpu_seconds(worker) - before
        for reader in readers:
            reader.sock.close()
        return spent / (args.events * args.streams) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets-file", type=Path, action="append", default=[HERE / "targets.conf"])
    parser.add_argument("--redis-target", action="append", default=[])
    parser.add_argument("--memory-target", action="append", default=[])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--sender-path", default=None)
    args = parser.parse_args()
    targets = read_targets(args.targets_file)
    columns = f"µs CPU per message dropped | per message delivered to 1 stream | per delivery ({args.streams} streams)"
    print(f"| target | {columns} |")
    print("|---|---|---|---|")
    for name in args.redis_target:
        figures = redis_case(*targets[name], args)
        print(f"| {name} | {figures['drop']:.1f} | {figures['deliver']:.1f} | |", flush=True)
    for name in args.memory_target:
        print(f"| {name} | | | {memory_case(*targets[name], args):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
