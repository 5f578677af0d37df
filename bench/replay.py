"""Replay under load: N clients arrive together with Last-Event-ID 0 at a store of M events.

For each target: publish M id'd events, then open N streams at once, each
asking for the whole store, and measure until every client has its last
stored event: the time from the burst to each client's last replayed event,
how many writes (HTTP chunks) each client's replay took, and the server's CPU
time for the burst (its whole process tree). Not part of the shared harness,
which has no replay phase.

    BENCH_HOME=$PWD/bench/.home bench/.home/.venv/bin/python bench/replay.py \\
        --targets-file bench/targets.conf --targets sse-stream-gunicorn,sse-stream-redis
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import time
from pathlib import Path

from targets import publish, read_targets, running

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(root_port: int) -> float:
    """CPU seconds (utime + stime, children included) of every process listening on or under the target."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if f"PORT={root_port}\0".encode() in environ:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buffer = b""
        self.chunks = 0
        self.done_at = 0.0

    def request(self) -> None:
        self.sock.sendall(b"GET /stream?channel=bench HTTP/1.1\r\nHost: bench\r\nLast-Event-ID: 0\r\n\r\n")
        self.sock.setblocking(False)

    def read(self, marker: bytes) -> bool:
        """Read what came; True once ``marker`` (the last stored event) has arrived."""
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return False
        self.buffer += data
        if marker in self.buffer and not self.done_at:
            self.done_at = time.perf_counter()
            body = self.buffer.split(b"\r\n\r\n", 1)[1]
            while body:  # count the chunks up to the marker
                size_line, _, rest = body.partition(b"\r\n")
                size = int(size_line, 16)
                self.chunks += 1
                if marker in rest[:size]:
                    break
                body = rest[size + 2 :]
            return True
        return False


def measure(name: str, command: str, folder: Path, clients: int, stored: int, size: int) -> dict[str, float]:
    with running(command, folder) as port:
        for number in range(1, stored + 1):
            publish(port, (f"e{number} ".encode() + b"x" * size)[:size], with_id=number)
        marker = f"data: e{stored} ".encode()
        connections = [Client(port) for _ in range(clients)]
        poller = select.epoll()
        by_fd = {c.sock.fileno(): c for c in connections}
        cpu_before = tree_cpu(port)
        started = time.perf_counter()
        for client in connections:
            client.request()
            poller.register(client.sock.fileno(), select.EPOLLIN)
        waiting = clients
        deadline = time.monotonic() + 120
        while waiting and time.monotonic() < deadline:
            for fd, _ in poller.poll(0.5):
                client = by_fd[fd]
                if not client.done_at and client.read(marker):
                    waiting -= 1
                    poller.unregister(fd)
        cpu = tree_cpu(port) - cpu_before
        for client in connections:
            client.sock.close()
    times = sorted(1000 * (c.done_at - started) for c in connections if c.done_at)
    chunks = [c.chunks for c in connections if c.done_at]
    result = {
        "complete": len(times),
        "p50_ms": statistics.median(times),
        "max_ms": times[-1],
        "chunks_median": statistics.median(chunks),
        "chunks_max": max(chunks),
        "cpu_s": cpu,
        "cpu_us_per_replayed_event": 1e6 * cpu / (len(times) * stored),
    }
    print(f"{name}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets-file", action="append", type=Path, required=True)
    parser.add_argument("--targets", required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--stored", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    targets = read_targets(args.targets_file)
    columns = [
        "target",
        "clients complete",
        "to last replayed event p50 / max ms",
        "writes per replay median / max",
        "server CPU s",
        "CPU µs per replayed event",
    ]
    rows = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for name in args.targets.split(","):
        r = measure(name, *targets[name], args.clients, args.stored, args.size)
        rows.append(
            f"| {name} | {r['complete']}/{args.clients} | {r['p50_ms']:.0f} / {r['max_ms']:.0f} |"
            f" {r['chunks_median']:.0f} / {r['chunks_max']} | {r['cpu_s']:.2f} | {r['cpu_us_per_replayed_event']:.2f} |"
        )
    print(f"\n{args.clients} clients with Last-Event-ID 0, a store of {args.stored} events of {args.size} bytes:\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
