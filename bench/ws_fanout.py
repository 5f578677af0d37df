"""The WebSocket transport against our SSE stream, in the same run: CPU per delivery, p99, RSS per idle connection.

The shared harness's driver reads SSE only, so this script is the WebSocket
driver mode. It starts bench_app (bench/bench_app.py) three times, pinned to
CPU 1 (the driver pins itself to CPU 0), and drives each the same way:

- ``sse``: gevent's WSGIServer, the plain handler, N SSE streams (our SSE target, sse-stream-wsgi);
- ``sse-wsh``: the same streams under gevent-websocket's WebSocketHandler (sse-stream-ws);
- ``ws``: N WebSockets of the same channel under WebSocketHandler (sse-stream-ws).

For each: RSS per idle connection ((RSS with N idle - RSS before) / N), then
M events of 100 bytes published one at a time (the next once every client has
the previous one), the server's CPU time over them / deliveries, and the p50
and p99 of send-to-receive latency (the data carries CLOCK_MONOTONIC at send).
WebSockets are opened with websocket-client (PyPI); their frames are then read
by one epoll loop (server frames are unmasked: a 2-10 byte header, then the JSON).

    .venv/bin/python bench/ws_fanout.py --clients 1000 --events 300 --reps 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import websocket

HERE = Path(__file__).resolve().parent
SERVE = (
    "from gevent import monkey; monkey.patch_all(); import os, socket, bench_app; from gevent.pywsgi import WSGIServer;"
    " s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
    " s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); s.bind(('127.0.0.1', int(os.environ['PORT'])));"
    " s.listen(4096); {handler} WSGIServer(s, bench_app.app, log=None{extra}).serve_forever()"
)
WSH = "from geventwebsocket.handler import WebSocketHandler;"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(handler: bool, port: int) -> subprocess.Popen[bytes]:
    code = SERVE.format(handler=WSH if handler else "", extra=", handler_class=WebSocketHandler" if handler else "")
    env = dict(os.environ, PORT=str(port), SSE_KEEPALIVE="600")
    process = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", code], cwd=HERE, env=env)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


class Clients:
    """N readers of one kind; ``poll()`` reads what arrived: per event seq, the receive times."""

    def __init__(self, kind: str, port: int, n: int) -> None:
        self.kind = kind
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytes] = {}
        self.keep: list[object] = []
        for _ in range(n):
            if kind == "ws":
                ws = websocket.create_connection(f"ws://127.0.0.1:{port}/stream?channel=bench")
                sock = ws.sock
                self.keep.append(ws)
            else:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b"GET /stream?channel=bench HTTP/1.1\r\nHost: bench\r\n\r\n")
            sock.setblocking(False)
            self.buffers[sock] = b""
            self.selector.register(sock, selectors.EVENT_READ)
        self.got: dict[int, list[int]] = {}

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            now = time.monotonic_ns()
            buffer = self.buffers[sock] + data
            self.buffers[sock] = self._events(buffer, now)

    def _events(self, buffer: bytes, now: int) -> bytes:
        if self.kind != "ws":
            while (at := buffer.find(b"data: e")) >= 0 and (end := buffer.find(b"\n", at)) >= 0:
                self._note(buffer[at + 6 : end].decode(), now)
                buffer = buffer[end:]
            return buffer[-4096:] if buffer.find(b"data: e") < 0 else buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                break
            payload, buffer = buffer[start : start + length], buffer[start + length :]
            if opcode == 1:  # text: one event
                data = json.loads(payload).get("data", "")
                if data.startswith("e"):
                    self._note(data, now)
        return buffer

    def _note(self, data: str, now: int) -> None:
        seq, sent = data.split(" ", 2)[:2]
        self.got.setdefault(int(seq[1:]), []).append(now - int(sent))

    def close(self) -> None:
        for sock in self.buffers:
            sock.close()


def tree_rss(process: psutil.Process) -> int:
    return int(process.memory_info().rss) + sum(child.memory_info().rss for child in process.children(True))


def tree_cpu(process: psutil.Process) -> float:
    """Seconds of CPU of every thread of the tree, from /proc/<pid>/task/<tid>/schedstat (ns resolution)."""
    total = 0
    for pid in [process.pid, *(child.pid for child in process.children(True))]:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def run(kind: str, handler: bool, n: int, events: int) -> dict[str, float]:
    port = free_port()
    server = start(handler, port)
    try:
        proc = psutil.Process(server.pid)
        publisher = http.client.HTTPConnection("127.0.0.1", port)

        def publish(data: str) -> None:
            publisher.request("POST", "/publish?channel=bench", body=data.encode())
            publisher.getresponse().read()

        publish("warm-up")
        time.sleep(0.5)
        before = tree_rss(proc)
        clients = Clients(kind, port, n)
        probe, subscribed = 10**9, False
        while not subscribed:  # until a probe reaches every client
            probe += 1
            publish(f"e{probe} {time.monotonic_ns()} probe")
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not subscribed:
                clients.poll(0.05)
                subscribed = len(clients.got.get(probe, [])) == n
        time.sleep(0.5)
        clients.poll(0)
        idle = (tree_rss(proc) - before) / n
        cpu = tree_cpu(proc)
        for seq in range(events):
            publish(f"e{seq} {time.monotonic_ns()} " + "x" * 70)
            deadline = time.monotonic() + 5
            while len(clients.got.get(seq, [])) < n and time.monotonic() < deadline:
                clients.poll(0.5)
        cpu = tree_cpu(proc) - cpu
        latencies = sorted(ns for seq in range(events) for ns in clients.got.get(seq, []))
        delivered = len(latencies)
        clients.close()
        return {
            "cpu_s_per_1M": cpu / delivered * 1e6,
            "p50_ms": latencies[len(latencies) // 2] / 1e6,
            "p99_ms": latencies[int(len(latencies) * 0.99)] / 1e6,
            "rss_kb_per_idle": idle / 1024,
            "lost": n * events - delivered,
        }
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    modes = [("sse", "sse", False), ("sse-wsh", "sse", True), ("ws", "ws", True)]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in modes}
    for _ in range(args.reps):
        for name, kind, handler in modes:
            results[name].append(run(kind, handler, args.clients, args.events))
    print(f"{args.clients} clients, {args.events} events of 100 bytes, median of {args.reps} runs\n")
    print("| mode | CPU s / 1M deliv | p50 ms | p99 ms | RSS KiB / idle conn | lost | CPU vs sse | RSS vs sse |")
    print("|---|---|---|---|---|---|---|---|")
    base = {key: statistics.median(r[key] for r in results["sse"]) for key in results["sse"][0]}
    for name, _, _ in modes:
        m = {key: statistics.median(r[key] for r in results[name]) for key in results[name][0]}
        lost = sum(r["lost"] for r in results[name])
        print(f"| {name} | {m['cpu_s_per_1M']:.2f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
              f" {m['rss_kb_per_idle']:.1f} | {lost:.0f} | {m['cpu_s_per_1M'] / base['cpu_s_per_1M']:.2f}x |"
              f" {m['rss_kb_per_idle'] / base['rss_kb_per_idle']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
