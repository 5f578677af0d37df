"""Many channels on Redis: 10,000 channels with one stream each, events to random channels, 1/2/4 workers.

For each subscription mode (``SSE_REDIS_SUBSCRIBE`` = ``app``: one
whole-app subscription per process; ``channels``: per-channel
subscriptions) and each worker count, starts ``with_redis gunicorn -k gevent
-w W bench_app:app`` (a private redis-server on PORT+1, in the target's
process tree), opens one stream per channel ``c0`` ... ``c<N-1>`` from one
epoll driver (bench/crowd.py), then a separate sender process sends
``--events`` live events (``id=False``), each to a channel drawn at random
(``--seed``), through the public API ``SSE.send_new_event`` on the same Redis
URL and prefix as the app. Closed loop: at most ``--window`` events are sent
and not yet delivered. Every event has exactly one client, so one send is
one delivery.

Reports deliveries/s, the server's CPU per delivery (the whole process tree:
gunicorn master and workers and redis-server, from /proc/PID/task/*/schedstat),
its ratio to 1 worker of the same mode in the same run, redis-server's own CPU
per send, and the p99 from the send (a CLOCK_MONOTONIC timestamp in the data)
to the read. The server is pinned to CPU 1, the driver and the sender to CPU 0
(``--no-pin`` to leave them free).

    BENCH_HOME=$PWD/bench/.home bench/.home/.venv/bin/python bench/many_channels.py \\
        --workers 1,2,4 --modes app,channels --channels 10000 --events 30000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUNICORN = (
    "exec with_redis gunicorn -k gevent -w {workers} --worker-connections 20000 --backlog 4096"
    " --graceful-timeout 2 --no-control-socket -b 127.0.0.1:$PORT bench_app:app"
)


def sender(args: argparse.Namespace) -> None:
    """The sender process: one send per credit byte read on stdin, from ``--threads`` threads."""
    from flask import Flask

    from flask_sse_stream import SSE

    app = Flask("sender")
    app.config.update(SSE_REDIS_URL=args.redis_url, SSE_REDIS_SUBSCRIBE=args.mode, SSE_REDIS_PREFIX="sse")
    sse = SSE(app)
    rng = random.Random(args.seed)
    channels = [f"c{rng.randrange(args.channels)}" for _ in range(args.events)]
    pad = "x" * args.size
    for _ in range(100):  # warm-up: connections, scripts; a channel no stream reads
        sse.send_new_event(data="warm-up", channel="warm-up")
    credits = threading.Semaphore(0)
    lock = threading.Lock()
    next_seq = [0]

    def work() -> None:
        while True:
            credits.acquire()
            with lock:
                seq = next_seq[0]
                next_seq[0] += 1
            if seq >= args.events:
                return
            data = f"e{seq} {time.monotonic_ns()} {pad}"[: max(args.size, 40)]
            sse.send_new_event(data=data, channel=channels[seq])

    threads = [threading.Thread(target=work, daemon=True) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    cpu0 = time.process_time()
    print("ready", flush=True)
    while chunk := os.read(0, 65536):
        credits.release(len(chunk))
    credits.release(args.threads + args.events)
    for thread in threads:
        thread.join(10)
    cpu = time.process_time() - cpu0
    print(json.dumps({"sent": min(next_seq[0], args.events), "cpu_s": cpu}), flush=True)
    sse.close()


def run_one(mode: str, workers: int, run: int, args: argparse.Namespace) -> dict[str, object]:
    from crowd import Crowd
    from targets import cpu_by_name, sample, started

    result: dict[str, object] = {"mode": mode, "workers": workers}
    env = {"SSE_REDIS_SUBSCRIBE": mode, "SSE_KEEPALIVE": str(args.keepalive)}
    log = Path(args.log_dir) / f"{mode}-w{workers}-{run}.log"
    cpus = {1} if args.pin else None
    crowd = None
    send = None
    with started(GUNICORN.format(workers=workers), HERE, env, cpus, log) as (port, process):
        try:
            deadline = time.monotonic() + 30
            while (
                sum(name != "redis-server" and name != "bash" for name, _, _ in sample(process.pid).values())
                < 1 + workers
            ):
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.2)
            time.sleep(1)
            crowd = Crowd(port)
            result["open_s"] = crowd.open([f"/stream?channel=c{n}".encode() for n in range(args.channels)])
            time.sleep(2)  # count writes and subscriptions settle
            tree = sample(process.pid)
            master = min(pid for pid, (name, _, _) in tree.items() if name not in ("redis-server", "bash"))
            result["fds_per_worker"] = sorted(
                len(os.listdir(f"/proc/{pid}/fd")) for pid, (name, _, _) in tree.items()
                if name not in ("redis-server", "bash") and pid != master
            )  # fmt: skip
            send = subprocess.Popen(
                [sys.executable, __file__, "--sender", "--redis-url", f"redis://127.0.0.1:{port + 1}/0", "--mode", mode,
                 "--channels", str(args.channels), "--events", str(args.events), "--seed", str(args.seed),
                 "--size", str(args.size), "--threads", str(args.threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=HERE,
                preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if args.pin else None,
            )  # fmt: skip
            assert send.stdin and send.stdout
            assert send.stdout.readline().strip() == b"ready", "the sender did not start"
            latencies: list[int] = []
            seen = bytearray(args.events)

            def on_event(client: int, seq: int, ns: int) -> None:
                if seq < args.events and not seen[seq]:
                    seen[seq] = 1
                    latencies.append(ns)

            before, cpu0 = sample(process.pid), time.process_time()
            started_at = time.perf_counter()
            last = time.monotonic()
            credited = 0
            send.stdin.write(b"c" * args.window)
            send.stdin.flush()
            while len(latencies) < args.events and time.monotonic() - last < args.stall:
                count = len(latencies)
                crowd.pump(on_event, 0.2)
                if len(latencies) > count:
                    last = time.monotonic()
                    send.stdin.write(b"c" * (len(latencies) - credited))
                    send.stdin.flush()
                    credited = len(latencies)
            wall = time.perf_counter() - started_at
            after, driver_cpu = sample(process.pid), time.process_time() - cpu0
            send.stdin.close()
            sender_out = json.loads(send.stdout.readline())
            send.wait(10)
            spent = cpu_by_name(before, after)
            server_cpu = sum(spent.values())
            redis_cpu = spent.get("redis-server", 0.0)
            delivered = len(latencies)
            latencies.sort()
            result.update(
                delivered=delivered, sent=sender_out["sent"], lost=sender_out["sent"] - delivered, wall_s=wall,
                deliveries_per_s=delivered / wall, server_cpu_s=server_cpu, redis_cpu_s=redis_cpu,
                server_us_per_delivery=1e6 * server_cpu / delivered,
                workers_us_per_delivery=1e6 * (server_cpu - redis_cpu) / delivered,
                redis_us_per_send=1e6 * redis_cpu / sender_out["sent"],
                p50_ms=latencies[len(latencies) // 2] / 1e6, p99_ms=latencies[int(len(latencies) * 0.99)] / 1e6,
                server_cpu_pct=100 * server_cpu / wall, driver_cpu_pct=100 * driver_cpu / wall,
                sender_cpu_pct=100 * sender_out["cpu_s"] / wall, closed_by_server=crowd.closed,
                cpu_by_process=spent,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - reported in the table, the next run goes on
            result["error"] = repr(error)
        finally:
            if send and send.poll() is None:
                send.kill()
                send.wait()
            if crowd:
                crowd.close()
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4", help="gunicorn worker counts (default 1,2,4)")
    parser.add_argument("--modes", default="app,channels", help="SSE_REDIS_SUBSCRIBE values (default app,channels)")
    parser.add_argument("--channels", type=int, default=10_000, help="channels, one stream each (default 10,000)")
    parser.add_argument("--events", type=int, default=30_000, help="events sent per run (default 30,000)")
    parser.add_argument("--window", type=int, default=64, help="events sent and not yet delivered (default 64)")
    parser.add_argument("--threads", type=int, default=4, help="sender threads (default 4)")
    parser.add_argument("--size", type=int, default=100, help="event data bytes (default 100)")
    parser.add_argument("--seed", type=int, default=13, help="random channel choice (default 13)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, runs interleaved; the table shows medians")
    parser.add_argument("--keepalive", type=float, default=600, help="SSE_KEEPALIVE of the app (default 600 s)")
    parser.add_argument("--stall", type=float, default=10, help="seconds without a delivery that end a run")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server to CPU 1, driver to 0")
    parser.add_argument("--log-dir", default=os.environ.get("BENCH_HOME", "/tmp"), help="targets' logs go here")
    parser.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        sender(args)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally blocks stop the targets
    sys.path.insert(0, str(HERE))
    if args.pin:
        os.sched_setaffinity(0, {0})
    print(f"command: {shlex.join(['bench/many_channels.py', *sys.argv[1:]])}")
    print(
        f"parameters: {json.dumps({k: v for k, v in vars(args).items() if k not in ('sender', 'redis_url', 'mode')})}"
    )
    modes, counts = args.modes.split(","), [int(w) for w in args.workers.split(",")]
    results = [run_one(m, w, r, args) for r in range(args.reps) for m in modes for w in counts]
    print(table(results, modes, counts))


def table(results: list[dict[str, object]], modes: list[str], counts: list[int]) -> str:
    def median(mode: str, workers: int, key: str) -> float | None:
        values = [float(r[key]) for r in results if r["mode"] == mode and r["workers"] == workers and key in r]  # type: ignore[arg-type]
        return statistics.median(values) if values else None

    lines = [
        "| mode | workers | deliveries/s | server CPU µs / delivery | ratio to 1 worker | of which Redis µs / send "
        "| p99 ms | time to open all streams s | lost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        one = median(mode, counts[0], "server_us_per_delivery")
        for workers in counts:
            cost = median(mode, workers, "server_us_per_delivery")
            if cost is None:
                errors = [r.get("error") for r in results if r["mode"] == mode and r["workers"] == workers]
                lines.append(f"| {mode} | {workers} | failed: {errors} |||||||")
                continue
            lost = sum(int(r.get("lost", 0)) for r in results if r["mode"] == mode and r["workers"] == workers)  # type: ignore[call-overload]
            lines.append(
                f"| {mode} | {workers} | {median(mode, workers, 'deliveries_per_s'):,.0f} | {cost:.1f} |"
                f" {cost / one:.2f}× | {median(mode, workers, 'redis_us_per_send'):.1f} |"
                f" {median(mode, workers, 'p99_ms'):.1f} | {median(mode, workers, 'open_s'):.1f} | {lost} |"
                if one else ""
            )  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
