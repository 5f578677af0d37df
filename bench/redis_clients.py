"""How many Redis connections a Redis-backed target holds with N open streams.

The harness measures CPU, latency and memory; this counts what it does not:
the connections each server keeps to Redis. A target is a line of a
targets.conf file (the harness's format) whose command uses `with_redis`,
which runs a private redis-server on PORT+1.

    BENCH_HOME=$PWD/bench/.home bench/.home/.venv/bin/python bench/redis_clients.py \\
        --targets-file bench/targets.conf --targets-file ../shared/bench/targets.conf \\
        --targets sse-stream-redis,flask-sse --clients 1,100,1000
"""

from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from targets import publish, read_targets, running


def redis_clients(port: int) -> tuple[int, int]:
    """(connected clients, of which pub/sub subscribers), minus the redis-cli asking."""
    listing = subprocess.run(["redis-cli", "-p", str(port), "client", "list"], capture_output=True, text=True).stdout
    lines = [line for line in listing.splitlines() if "cmd=client|list" not in line]
    subscribers = [line for line in lines if " sub=0 " not in line or " psub=0 " not in line]
    return len(lines), len(subscribers)


def measure(name: str, command: str, folder: Path, counts: list[int]) -> list[tuple[int, int, int]]:
    rows = []
    streams: list[socket.socket] = []
    opened: set[socket.socket] = set()
    with running(command, folder) as port:
        for count in counts:
            while len(streams) < count:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b"GET /stream?channel=bench HTTP/1.1\r\nHost: bench\r\n\r\n")
                streams.append(sock)
            # Every stream is open before counting: it has received bytes. Some
            # servers (flask-sse) send their headers only with a first event,
            # so probe events are published until every stream has some.
            deadline = time.monotonic() + 120
            while len(opened) < len(streams):
                assert time.monotonic() < deadline, f"{name}: {len(streams) - len(opened)} streams got nothing"
                publish(port)
                for sock in streams:
                    if sock not in opened:
                        sock.settimeout(0.01 if opened else 2)
                        try:
                            data = sock.recv(65536)
                        except TimeoutError:
                            continue
                        assert b" 200 " in data, f"{name}: a stream was refused: {data[:200]!r}"
                        opened.add(sock)
            connected, subscribers = redis_clients(port + 1)
            rows.append((count, connected, subscribers))
            print(f"{name}: {count} streams -> {connected} Redis connections, {subscribers} subscribed", flush=True)
        for sock in streams:
            sock.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets-file", action="append", type=Path, required=True)
    parser.add_argument("--targets", required=True)
    parser.add_argument("--clients", default="1,100,1000")
    args = parser.parse_args()
    targets = read_targets(args.targets_file)
    counts = [int(n) for n in args.clients.split(",")]
    table = ["| target | " + " | ".join(f"{n} streams" for n in counts) + " |", "|---|" + "---|" * len(counts)]
    for name in args.targets.split(","):
        command, folder = targets[name]
        rows = measure(name, command, folder, counts)
        table.append(f"| {name} | " + " | ".join(f"{c} ({s} subscribed)" for _, c, s in rows) + " |")
    print("\nRedis connections held (subscribed = pub/sub):\n" + "\n".join(table))
    print("\ncommand: " + shlex.join(["bench/redis_clients.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
