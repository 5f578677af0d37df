"""Capacity: as many idle streams as one process may hold here, on one gevent worker, beside `limit`.

For each target (default: the harness's ``limit``, ``sse-stream-gunicorn``
and ``sse-stream-redis``) and each N (default 5,000, 10,000 and 19,000; a
process may hold at most 20,000 open files on this machine): start the
target (pinned to CPU 1; this driver to CPU 0), sample its process tree's
RSS, open N streams of ``/stream?channel=bench`` from one epoll driver
(bench/crowd.py, at most ``--pending`` unanswered at a time) and time it
until every one has its response headers; publish one probe event and wait
until every stream has it (lazy first-use costs are paid); after a second,
RSS again: **RSS per idle stream** = (RSS with N streams - RSS before) / N,
summed over the tree (Redis included), as the harness computes it; beside
it, the machine's kernel slab and TCP buffer memory over the same interval,
halved (both ends of each connection are on this machine; other work on the
machine moves it too). Then the
server's CPU while the N streams idle for ``--idle`` seconds (keep-alive
comments included), then ``--events`` events published one at a time
(``POST /publish``, each once the previous one reached every stream): the
p99 and the last delivery of each fan-out from the publish.

With ``--tracemalloc``, runs ``traced_app.py`` (bench_app under tracemalloc)
as the in-process and Redis targets, at N and 2N idle streams, and prints what
grew per stream between the two snapshots, by line.

    BENCH_HOME=$PWD/bench/.home bench/.home/.venv/bin/python bench/capacity.py --clients 5000,10000,19000
    BENCH_HOME=$PWD/bench/.home bench/.home/.venv/bin/python bench/capacity.py --tracemalloc --clients 4000
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRACED = {
    "traced-gunicorn": "ulimit -Sn $(ulimit -Hn) && exec gunicorn -k gevent -w 1 --worker-connections 20000"
    " --backlog 4096 --graceful-timeout 2 --no-control-socket -b 127.0.0.1:$PORT traced_app:app",
    "traced-redis": "ulimit -Sn $(ulimit -Hn) && exec with_redis gunicorn -k gevent -w 1 --worker-connections 20000"
    " --backlog 4096 --graceful-timeout 2 --no-control-socket -b 127.0.0.1:$PORT traced_app:app",
}


def tree_rss(root: int) -> int:
    from targets import sample

    return sum(rss for _, _, rss in sample(root).values())


def kernel_kib() -> tuple[int, int]:
    """(Slab KiB from /proc/meminfo, TCP buffer pages from /proc/net/sockstat): the machine's, not the target's."""
    slab = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("Slab:")
    )
    tcp = next(line for line in Path("/proc/net/sockstat").read_text().splitlines() if line.startswith("TCP:")).split()
    return slab, int(tcp[tcp.index("mem") + 1])


def tree_cpu(root: int) -> float:
    from targets import sample

    return sum(cpu for _, cpu, _ in sample(root).values())


def fan_out(crowd: object, port: int, seq: int, n: int, timeout: float = 60) -> list[float]:
    """Publish event ``seq``; the ms from the publish to each stream's read of it."""
    latencies: list[float] = []

    def on_event(client: int, got: int, ns: int) -> None:
        if got == seq:
            latencies.append(ns / 1e6)

    # The request goes out, the streams are read at once, the answer is read last.
    data = f"e{seq} {time.monotonic_ns()} ".encode() + b"x" * 60
    with socket.create_connection(("127.0.0.1", port), 30) as sock:
        sock.sendall(
            f"POST /publish?channel=bench HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        deadline = time.monotonic() + timeout
        while len(latencies) < n and time.monotonic() < deadline:
            crowd.pump(on_event, 0.5)  # type: ignore[attr-defined]
        assert b" 200 " in sock.recv(65536)
    if len(latencies) < n:
        raise RuntimeError(f"event {seq} reached {len(latencies)} of {n} streams")
    return sorted(latencies)


def measure(name: str, command: str, folder: Path, n: int, run: int, args: argparse.Namespace) -> dict[str, object]:
    from crowd import Crowd
    from targets import started

    result: dict[str, object] = {"target": name, "clients": n}
    log = Path(args.log_dir) / f"capacity-{name}-{n}.log"
    crowd = None
    with started(command, folder, cpus={1} if args.pin else None, log=log) as (port, process):
        try:
            from targets import publish

            publish(port, b"warm-up")
            time.sleep(1)
            empty, kernel0 = tree_rss(process.pid), kernel_kib()
            crowd = Crowd(port)
            cpu0, server0 = time.process_time(), tree_cpu(process.pid)
            result["accept_s"] = crowd.open([b"/stream?channel=bench"] * n, pending=args.pending)
            result["accept_driver_cpu_s"] = time.process_time() - cpu0
            result["accept_server_cpu_us_per_stream"] = 1e6 * (tree_cpu(process.pid) - server0) / n
            fan_out(crowd, port, 0, n)  # the probe
            time.sleep(1)
            idle_rss, kernel1 = tree_rss(process.pid), kernel_kib()
            # Both ends of every connection are on this machine: half of it is the server's.
            result["kernel_slab_kib_per_stream"] = (kernel1[0] - kernel0[0]) / n / 2
            result["kernel_tcp_buffer_kib_per_stream"] = (kernel1[1] - kernel0[1]) * 4 / n / 2
            result["rss_kib_per_stream"] = (idle_rss - empty) / n / 1024
            result["rss_mib_empty"] = empty / 2**20
            if args.idle:
                cpu0 = tree_cpu(process.pid)
                time.sleep(args.idle)
                result["idle_cpu_pct"] = 100 * (tree_cpu(process.pid) - cpu0) / args.idle
            p99s, lasts = [], []
            cpu0 = tree_cpu(process.pid)
            for seq in range(1, args.events + 1):
                latencies = fan_out(crowd, port, seq, n)
                p99s.append(latencies[int(len(latencies) * 0.99)])
                lasts.append(latencies[-1])
            if p99s:
                spent = tree_cpu(process.pid) - cpu0
                result["fanout_p99_ms"], result["fanout_last_ms"] = statistics.median(p99s), statistics.median(lasts)
                result["fanout_cpu_us_per_delivery"] = 1e6 * spent / n / args.events
            result["closed_by_server"] = crowd.closed
        except Exception as error:  # noqa: BLE001 - reported in the table, the next run goes on
            result["error"] = repr(error)
        finally:
            if crowd:
                crowd.close()
    print(json.dumps(result), flush=True)
    return result


def traced(name: str, command: str, n: int, args: argparse.Namespace) -> None:
    """Snapshots at N and 2N idle streams; print the top growth per stream, by line."""
    import tracemalloc

    from crowd import Crowd
    from targets import publish, started

    folder = Path(tempfile.mkdtemp(prefix="capacity-"))
    crowd = None
    with started(command, HERE, cpus=None, log=folder / "target.log") as (port, _):
        try:
            publish(port, b"warm-up")
            crowd = Crowd(port)
            snapshots = []
            for step in (1, 2):
                crowd.open([b"/stream?channel=bench"] * n, pending=args.pending)
                fan_out(crowd, port, step, n * step)
                time.sleep(1)
                path = folder / f"{step}.snapshot"
                publish(port, b"", channel="none")  # a request like the snapshot's own, before it
                request = f"GET /snapshot?to={path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
                with socket.create_connection(("127.0.0.1", port), 30) as sock:
                    sock.sendall(request.encode())
                    while sock.recv(65536):
                        pass
                snapshots.append(tracemalloc.Snapshot.load(str(path)))
        finally:
            if crowd:
                crowd.close()
    stats = snapshots[1].compare_to(snapshots[0], "lineno")
    total = sum(stat.size_diff for stat in stats)
    print(f"\n{name}: Python allocations that grew from {n} to {2 * n} idle streams: "
          f"{total / n:,.0f} bytes per stream in all; by line:")  # fmt: skip
    for stat in stats[: args.top]:
        if stat.size_diff <= 0:
            break
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / n:8,.0f} B/stream {stat.count_diff / n:6.2f} blocks/stream"
              f"  {frame.filename.split('site-packages/')[-1].split('wt-bench/')[-1]}:{frame.lineno}")  # fmt: skip
    by_trace = snapshots[1].compare_to(snapshots[0], "traceback")
    print(f"  the {args.traces} largest, with their callers:")
    for stat in by_trace[: args.traces]:
        print(f"  {stat.size_diff / n:,.0f} B/stream:")
        for line in stat.traceback.format(limit=8, most_recent_first=True):
            print("     " + line.replace("/work/wt-bench/bench/.home/.venv/lib/python3.11/site-packages/", ""))


def main() -> None:
    from targets import SHARED, read_targets

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="limit,sse-stream-gunicorn,sse-stream-redis")
    parser.add_argument(
        "--clients", default="5000,10000,19000", help="idle stream counts N (default 5,000,10,000,19,000)"
    )
    parser.add_argument("--events", type=int, default=5, help="events fanned out to all N, one at a time (default 5)")
    parser.add_argument("--idle", type=float, default=10, help="seconds of idle CPU measured (default 10; 0: none)")
    parser.add_argument("--pending", type=int, default=500, help="streams opened and not yet answered, at most")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, interleaved; the table shows medians")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin target to CPU 1, driver to 0")
    parser.add_argument("--tracemalloc", action="store_true", help="the growth per stream from N to 2N, by line")
    parser.add_argument("--top", type=int, default=15, help="lines shown with --tracemalloc")
    parser.add_argument("--traces", type=int, default=4, help="tracebacks shown with --tracemalloc")
    parser.add_argument("--log-dir", default=str(Path(tempfile.gettempdir())), help="targets' logs go here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally blocks stop the targets
    import os

    if args.pin:
        os.sched_setaffinity(0, {0})
    print(f"command: {shlex.join(['bench/capacity.py', *sys.argv[1:]])}")
    print(f"parameters: {json.dumps(vars(args))}")
    counts = [int(n) for n in args.clients.split(",")]
    if args.tracemalloc:
        for name, command in TRACED.items():
            traced(name, command, counts[0], args)
        return
    targets = read_targets([SHARED / "targets.conf", HERE / "targets.conf"])
    names = args.targets.split(",")
    results = [
        measure(name, *targets[name], n, run, args)
        for run in range(args.reps) for n in counts for name in names
    ]  # fmt: skip
    print(table(results, names, counts))


def table(results: list[dict[str, object]], names: list[str], counts: list[int]) -> str:
    def median(name: str, n: int, key: str) -> float | None:
        values = [float(r[key]) for r in results if r["target"] == name and r["clients"] == n and key in r]  # type: ignore[arg-type]
        return statistics.median(values) if values else None

    def show(value: float | None, form: str) -> str:
        return "-" if value is None else form.format(value)

    lines = [
        "| target | N | RSS KiB / stream | ratio to limit | time to accept all s | streams accepted / s "
        "| server CPU µs / accept | kernel slab KiB / stream "
        "| idle CPU % | fan-out p99 ms | fan-out last ms | fan-out CPU µs / delivery |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in counts:
        base = median("limit", n, "rss_kib_per_stream")
        for name in names:
            rss, accept = median(name, n, "rss_kib_per_stream"), median(name, n, "accept_s")
            if rss is None:
                errors = [r.get("error") for r in results if r["target"] == name and r["clients"] == n]
                lines.append(f"| {name} | {n:,} | failed: {errors} ||||||||||")
                continue
            lines.append(
                f"| {name} | {n:,} | {rss:.1f} | {show(rss / base if base else None, '{:.2f}×')} |"
                f" {show(accept, '{:.1f}')} | {show(n / accept if accept else None, '{:,.0f}')} |"
                f" {show(median(name, n, 'accept_server_cpu_us_per_stream'), '{:.0f}')} |"
                f" {show(median(name, n, 'kernel_slab_kib_per_stream'), '{:.1f}')} |"
                f" {show(median(name, n, 'idle_cpu_pct'), '{:.1f}')} |"
                f" {show(median(name, n, 'fanout_p99_ms'), '{:.0f}')} |"
                f" {show(median(name, n, 'fanout_last_ms'), '{:.0f}')} |"
                f" {show(median(name, n, 'fanout_cpu_us_per_delivery'), '{:.1f}')} |"
            )  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
