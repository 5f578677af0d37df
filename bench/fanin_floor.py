"""The floor under `fanin.py`: CPU per pub/sub message for a gevent process that only reads and parses it.

No Flask, no listener, no delivery: a monkey-patched process subscribes to
one channel of a private redis-server, another process publishes 100-byte
messages at `--rate`, and the reader parses each (hiredis) and counts it.
Three ways to read, each in its own process, interleaved over `--reps`:

- `recv`: a greenlet blocked in the gevent socket's `recv` (what the listener
  did before: a `recv` that finds nothing, a wait in the hub, two switches);
- `wait`: a greenlet that waits for the socket to be readable, then one `recv`;
- `hub`: a callback of an io watcher, in the hub itself (what the listener does now).

Whatever a listener does on top, it cannot cost less than its row here.

    bench/.home/.venv/bin/python bench/fanin_floor.py --messages 6000 --rate 2000 --reps 3
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

READER = r"""
from gevent import monkey

monkey.patch_all()

import subprocess, sys, time

import gevent
import hiredis
import redis
from gevent.hub import get_hub

mode, count, rate, port = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
connection = redis.Redis(port=port).connection_pool.get_connection()
connection.send_command("SUBSCRIBE", "floor")
sock, reader, got = connection._sock, hiredis.Reader(), 0

def handle(data):
    global got
    reader.feed(data)
    while (reply := reader.gets()) is not False:
        got += reply[0] == b"message"

handle(sock.recv(65536))  # the confirmation
SENDER = f'''
import time, redis
client = redis.Redis(port={port}); start = time.monotonic()
for n in range({count}):
    client.publish("floor", b"x" * 100)
    ahead = start + (n + 1) / {rate} - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
'''
sender = subprocess.Popen([sys.executable, "-c", SENDER])
cpu = time.process_time()
if mode == "recv":
    while got < count:
        handle(sock.recv(65536))
elif mode == "wait":
    hub, raw = get_hub(), sock._sock
    watcher = hub.loop.io(sock.fileno(), 1)
    while got < count:
        hub.wait(watcher)
        handle(raw.recv(65536))
else:
    raw, done = sock._sock, gevent.event.Event()
    watcher = get_hub().loop.io(sock.fileno(), 1)

    def readable():
        try:
            handle(raw.recv(65536))
        except BlockingIOError:
            return
        if got >= count:
            watcher.stop()
            done.set()

    watcher.start(readable)
    done.wait()
cpu = time.process_time() - cpu
sender.wait()
print(cpu / count * 1e6)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode:
            time.sleep(0.05)
        figures: dict[str, list[float]] = {"recv": [], "wait": [], "hub": []}
        for _ in range(args.reps):
            for mode, values in figures.items():
                command = [sys.executable, "-c", READER, mode, str(args.messages), str(args.rate), str(port)]
                values.append(float(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
    finally:
        server.terminate()
        server.wait(10)
    print(f"| read | µs CPU per message (median of {args.reps}) | runs |")
    print("|---|---|---|")
    for mode, values in figures.items():
        print(f"| {mode} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
