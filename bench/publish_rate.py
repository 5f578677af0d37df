"""Publish rate: sends per second from 1 and from 4 processes, and Redis CPU per send, beside flask-sse.

Each row is a peer, a number of processes and of senders in each, all
sending for ``--seconds`` to one channel (``bench``) as fast as one call after
the other allows. One sender is the process's main thread; several are
greenlets of a monkey-patched process, as the request handlers of a
``gunicorn -k gevent`` worker are (our sends that queue up while one is in
flight then share a Redis round trip):

- ``memory``: ``SSE.send_new_event(id=True)`` with the in-process store (each
  process its own store; no Redis);
- ``redis-channels`` / ``redis-app``: ``SSE.send_new_event(id=True)`` on Redis,
  ``SSE_REDIS_SUBSCRIBE`` = ``channels`` / ``app`` (the publish goes to the
  channel's pub/sub channel / to the app's one);
- ``redis-live``: the same with ``id=False`` (not stored), ``channels``;
- ``flask-sse``: flask-sse 1.0.0's ``sse.publish`` (the shared harness's
  ``apps/flask_sse_app.py``, with ``id=<n>``; flask-sse stores nothing, and
  opens a Redis connection per publish);
- ``publish-floor``: a bare ``PUBLISH`` on one kept redis-py connection: what
  one round trip costs Redis on this machine (the ``floor-c`` of this table).

One private redis-server (the flags of the harness's ``with_redis``) on a
free loopback port serves every Redis row, with one raw pub/sub subscriber
(``redis-cli PSUBSCRIBE *``) so that every publish is delivered once. Its CPU
for a row is read from /proc/<pid>/task/*/schedstat (utime+stime from
/proc/<pid>/stat as a cross-check) before and after; Redis's own time in
commands (``INFO commandstats``) is shown beside it. Rows are interleaved over
``--reps``; the table shows medians.

    BENCH_HOME=$PWD/bench/.home bench/.home/.venv/bin/python bench/publish_rate.py --processes 1,4 --seconds 5

With ``--store-memory CHANNELS,EVENTS``, it then also measures what the store
costs Redis's memory (``used_memory``): EVENTS stored events of ``--size``
bytes in each of CHANNELS channels, and CHANNELS channels with live events
only (their ``marks`` hash), from one process.
"""

from __future__ import annotations

import sys

if "--publisher" in sys.argv and "--patch" in sys.argv:  # several senders: greenlets, as in a gevent worker
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402 - after monkey-patching
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED_APPS = HERE.parents[1] / "shared" / "bench" / "apps"
PEERS = ("memory", "redis-channels", "redis-app", "redis-live", "flask-sse", "publish-floor")


def publisher(args: argparse.Namespace) -> None:
    """One publishing process: waits for a line on stdin, sends until the deadline, prints its count."""
    context = contextlib.nullcontext
    if args.peer == "flask-sse":
        os.environ["REDIS_URL"] = args.redis_url
        sys.path.insert(0, str(SHARED_APPS))
        from flask_sse import sse
        from flask_sse_app import app  # type: ignore[import-not-found]

        context = app.app_context  # each sender its own, as each request handler has
        context().push()

        def send(n: int) -> None:
            sse.publish(data, id=str(n), channel="bench")
    elif args.peer == "publish-floor":
        import redis

        client = redis.Redis.from_url(args.redis_url)

        def send(n: int) -> None:
            client.publish("bench", data)
    else:
        from flask import Flask

        from flask_sse_stream import SSE

        app = Flask("publisher")
        if args.peer != "memory":
            app.config.update(SSE_REDIS_URL=args.redis_url, SSE_REDIS_PREFIX="bench",
                              SSE_REDIS_SUBSCRIBE="app" if args.peer == "redis-app" else "channels")  # fmt: skip
        ours = SSE(app)
        stored = args.peer != "redis-live"

        def send(n: int) -> None:
            ours.send_new_event(data=data, id=stored, channel="bench")

    data = "x" * args.size
    for n in range(200):  # warm-up: connections, scripts
        send(n)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0 = time.process_time()
    deadline = time.monotonic() + args.seconds
    counts = [0] * args.senders

    def sender(index: int) -> None:
        count = 0
        with context():
            while time.monotonic() < deadline:
                for _ in range(50):
                    send(count)
                    count += 1
        counts[index] = count

    if args.senders == 1:
        sender(0)
    else:
        import gevent

        gevent.joinall([gevent.spawn(sender, index) for index in range(args.senders)], raise_error=True)
    print(json.dumps({"sends": sum(counts), "cpu_s": time.process_time() - cpu0}), flush=True)


def redis_cpu(pid: int) -> tuple[float, float]:
    """(schedstat seconds, utime+stime seconds) of redis-server."""
    from targets import cpu_seconds

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return cpu_seconds(pid), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_usec(port: int, top: tuple[str, ...]) -> tuple[int, int]:
    """(calls, µs) so far of the commands a publisher sends, from INFO commandstats.

    Calls count every command, those a script makes included; µs count the
    top-level ones only (EVALSHA's µs include its script's commands; flask-sse
    sends PUBLISH itself), so as not to count a script's commands twice.
    """
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"], capture_output=True, text=True).stdout
    calls = usec = 0
    for line in out.splitlines():
        if line.startswith("cmdstat_") and not line.startswith(("cmdstat_info", "cmdstat_psubscribe")):
            name = line[len("cmdstat_") :].split(":", 1)[0]
            stats = dict(item.split("=") for item in line.split(":", 1)[1].split(","))
            calls += int(stats["calls"])
            if name in top:
                usec += int(stats["usec"])
    return calls, usec


def run_row(
    peer: str, processes: int, senders: int, redis: tuple[int, int] | None, args: argparse.Namespace
) -> dict[str, object]:
    pid, port = redis if redis else (0, 0)
    top = ("publish", "client|setinfo", "select") if peer in ("flask-sse", "publish-floor") else ("evalsha", "eval")
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--publisher",
                "--peer",
                peer,
                "--redis-url",
                f"redis://127.0.0.1:{port}/0",
                "--seconds",
                str(args.seconds),
                "--size",
                str(args.size),
                "--senders",
                str(senders),
                *(["--patch"] if senders > 1 else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )  # fmt: skip
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout and child.stdout.readline().strip() == "ready", f"{peer}: a publisher did not start"
        before = redis_cpu(pid) if pid else (0.0, 0.0)
        stats_before = command_usec(port, top) if port else (0, 0)
        for child in children:
            assert child.stdin
            child.stdin.write("go\n")
            child.stdin.flush()
        outs = [json.loads(child.stdout.readline()) for child in children]  # type: ignore[union-attr]
        after = redis_cpu(pid) if pid else (0.0, 0.0)
        stats_after = command_usec(port, top) if port else (0, 0)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
    sends = sum(out["sends"] for out in outs)
    row: dict[str, object] = {
        "peer": peer, "processes": processes, "senders": senders, "sends": sends, "sends_per_s": sends / args.seconds,
        "publisher_cpu_us_per_send": 1e6 * sum(out["cpu_s"] for out in outs) / sends,
    }  # fmt: skip
    if pid:
        row.update(
            redis_us_per_send=1e6 * (after[0] - before[0]) / sends,
            redis_ticks_us_per_send=1e6 * (after[1] - before[1]) / sends,
            redis_command_us_per_send=(stats_after[1] - stats_before[1]) / sends,
            redis_calls_per_send=(stats_after[0] - stats_before[0]) / sends,
        )
    print(json.dumps(row), flush=True)
    return row


def store_memory(port: int, channels: int, events: int, size: int) -> None:
    """Redis used_memory per stored event and per channel (see the module docstring)."""
    from flask import Flask

    from flask_sse_stream import SSE

    def used() -> int:
        out = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"], capture_output=True, text=True).stdout
        return int(next(line for line in out.splitlines() if line.startswith("used_memory:")).split(":")[1])

    data = "x" * size
    for stored, prefix in ((True, "memory-stored"), (False, "memory-live")):
        app = Flask(prefix)
        app.config.update(SSE_REDIS_URL=f"redis://127.0.0.1:{port}/0", SSE_REDIS_PREFIX=prefix)
        sse = SSE(app)
        sse.send_new_event(data=data, id=stored, channel="warm-up")
        before = used()
        for _ in range(events if stored else 1):
            for channel in range(channels):
                sse.send_new_event(data=data, id=stored, channel=f"c{channel}")
        grown = used() - before
        sse.close()
        if stored:
            print(f"store: {channels} channels x {events} stored events of {size} bytes: {grown / 2**20:.1f} MiB, "
                  f"{grown / channels / events:.0f} bytes per stored event (the channel's marks included)")  # fmt: skip
        else:
            print(f"live only: {channels} channels: {grown / channels:.0f} bytes per channel (its marks hash)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"rows (default {','.join(PEERS)})")
    parser.add_argument("--processes", default="1,4", help="publishing process counts (default 1,4)")
    parser.add_argument("--seconds", type=float, default=5, help="sending time per row (default 5)")
    parser.add_argument("--senders", default="1", help="senders per process, greenlets when more than 1 (default 1)")
    parser.add_argument("--size", type=int, default=100, help="event data bytes (default 100)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, interleaved (default 3)")
    parser.add_argument("--store-memory", help="CHANNELS,EVENTS: also Redis memory per stored event and channel")
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--patch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        args.senders = int(args.senders)
        publisher(args)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(HERE))
    print(f"command: {shlex.join(['bench/publish_rate.py', *sys.argv[1:]])}")
    print(
        f"parameters: {json.dumps({k: v for k, v in vars(args).items() if k not in ('publisher', 'peer', 'redis_url')})}"  # noqa: E501
    )
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--maxclients", "15000", "--loglevel", "warning"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    listener = None
    try:
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode:
            time.sleep(0.05)
        listener = subprocess.Popen(["redis-cli", "-p", str(port), "psubscribe", "*"], stdout=subprocess.DEVNULL)
        peers, counts = args.peers.split(","), [int(n) for n in args.processes.split(",")]
        senders = [int(n) for n in args.senders.split(",")]
        rows = [
            run_row(peer, n, k, None if peer == "memory" else (redis.pid, port), args)
            for _ in range(args.reps) for peer in peers for n in counts for k in senders
        ]  # fmt: skip
        if args.store_memory:
            channels, events = (int(n) for n in args.store_memory.split(","))
            store_memory(port, channels, events, args.size)
    finally:
        for process in (listener, redis):
            if process and process.poll() is None:
                process.terminate()
                process.wait(10)
    print(table(rows, peers, counts, senders))


COLUMNS = (
    "sends_per_s",
    "publisher_cpu_us_per_send",
    "redis_us_per_send",
    "redis_command_us_per_send",
    "redis_calls_per_send",
)


def table(rows: list[dict[str, object]], peers: list[str], counts: list[int], senders: list[int]) -> str:
    def median(peer: str, n: int, k: int, key: str) -> str:
        values = [
            float(r[key])  # type: ignore[arg-type]
            for r in rows
            if r["peer"] == peer and r["processes"] == n and r["senders"] == k and key in r
        ]
        return f"{statistics.median(values):,.1f}" if values else "-"

    lines = [
        "| peer | processes | senders each | sends/s | publisher CPU µs / send | Redis CPU µs / send"
        " | of which executing commands µs | Redis calls / send |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for peer in peers:
        for n in counts:
            for k in senders:
                cells = [median(peer, n, k, key) for key in COLUMNS]
                cells[0] = cells[0].removesuffix(".0")
                lines.append(f"| {peer} | {n} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
