"""What ending streams and counting them cost, across gunicorn workers on Redis.

Runs ``gunicorn -k gevent -w WORKERS`` with ``tests/apps/access.py`` on a
private redis-server, opens ``--streams`` streams of one user spread over
the workers, and ``--rounds`` times: bans the user through one worker
(``POST /ban``: ``end_streams(subject=...)``), notes when each stream's
connection ends (one epoll loop), and lets the user back in and reopens.
Then it churns streams open and closed and reads Redis's own accounting
(``INFO commandstats``) for the count writes.

    .venv/bin/python bench/access.py --workers 4 --streams 40 --rounds 30

Prints the delay from the ``/ban`` request to each stream's end (p50, p99,
max), Redis calls and µs per ``end_streams``, and the count writes per
second and their µs in Redis.

    .venv/bin/python bench/access.py --index 19000

measures instead, in this process, what one ending costs the fan-out of a
process that holds 1,000 to 19,000 streams it does not end (the index by
subject and channel): µs per ``end(subject=...)``, per ``end(channel=...)``
and per ``end(both)``, each ending two streams, with the ratio to the cost at
1,000 streams (flat: about 1.0). Each figure is the median of 2,000 calls.
"""

from __future__ import annotations

import argparse
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.client import StreamClient  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.workers import Gunicorn, worker_of  # noqa: E402

APP = "tests.apps.access:create_app()"


def script_stats(redis_server: RedisServer) -> tuple[int, int]:
    """(calls, µs) of EVALSHA and EVAL so far."""
    with redis_server.client() as client:
        stats = client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        if name in stats:
            calls += int(stats[name]["calls"])
            usec += int(stats[name]["usec"])
    return calls, usec


def open_spread(running: Gunicorn, path: str, count: int) -> list[StreamClient]:
    clients = []
    while len(clients) < count:
        client = StreamClient(running.port, path)
        assert client.status == 200, client.body()
        client.next_chunk()
        clients.append(client)
    return clients


def ending_delays(running: Gunicorn, clients: list[StreamClient]) -> list[float]:
    """POST /ban, then the seconds until each client's connection ends."""
    poller = select.epoll()
    by_fd = {client.sock.fileno(): client for client in clients}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
    started = time.monotonic()
    answer = running.request("POST", "/ban", user="bench")
    assert answer.status == 200, answer
    delays = []
    open_fds = set(by_fd)
    while open_fds:
        for fd, _ in poller.poll(5):
            client = by_fd[fd]
            data = client.sock.recv(65536)
            if not data or b"0\r\n\r\n" in data:
                delays.append(time.monotonic() - started)
                poller.unregister(fd)
                open_fds.discard(fd)
        if time.monotonic() - started > 10:
            raise AssertionError(f"{len(open_fds)} streams still open 10 s after the ban")
    poller.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--churn", type=int, default=2000, help="streams opened and closed for the count writes")
    parser.add_argument("--index", type=int, default=0, help="in-process only: the most unmatched streams")
    options = parser.parse_args()
    if options.index:
        measure_index(options.index)
        return
    import tests.support.workers as workers

    workers.WORKERS = options.workers
    with tempfile.TemporaryDirectory() as folder:
        redis_server = RedisServer(Path(folder))
        running = Gunicorn(Path(folder) / "gunicorn.log", redis_server, APP, SSE_KEEPALIVE="5")
        try:
            measure(running, redis_server, options)
        finally:
            running.stop()
            redis_server.stop()


def measure(running: Gunicorn, redis_server: RedisServer, options: argparse.Namespace) -> None:
    delays: list[float] = []
    for _ in range(options.rounds):
        clients = open_spread(running, "/stream?user=bench&channel=news", options.streams)
        spread = len({worker_of(client) for client in clients})
        delays += ending_delays(running, clients)
        for client in clients:
            client.close()
        assert running.request("POST", "/unban", user="bench").status == 200
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(f"end_streams across {options.workers} workers ({spread} served the last round's streams):")
    print(f"  {len(delays)} stream endings: p50 {statistics.median(delays) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms from the request to the stream's end")  # fmt: skip

    # Count writes: open and close streams steadily; every process batches its changes.
    # Each write of a process's counts is one ZADD (or a ZREM once it has none) in Redis.
    time.sleep(1.5)  # let the last round's count writes land
    before = command_calls(redis_server, "zadd", "zrem")
    started = time.monotonic()
    for n in range(options.churn):
        client = StreamClient(running.port, f"/stream?user=u{n}&channel=c{n % 50}")
        client.next_chunk()
        client.close()
    seconds = time.monotonic() - started
    time.sleep(1.5)
    writes = command_calls(redis_server, "zadd", "zrem") - before
    print(f"counts: {options.churn} streams opened and closed in {seconds:.1f} s "
          f"({options.churn / seconds:.0f}/s) by {options.workers} workers: {writes} count writes "
          f"({writes / options.churn:.3f} per stream; {writes / (seconds + 3):.1f}/s)")  # fmt: skip
    script_costs(redis_server)


def command_calls(redis_server: RedisServer, *names: str) -> int:
    with redis_server.client() as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


def script_costs(redis_server: RedisServer, calls: int = 2000) -> None:
    """Redis's own µs per end_streams, per count write (20 channels changed of 1,000) and per count read."""
    from flask import Flask

    from flask_sse_stream import SSE
    from flask_sse_stream.access import Ending
    from flask_sse_stream.core import core_of

    app = Flask("costs")
    app.config.update(SSE_REDIS_URL=redis_server.url, SSE_REDIS_PREFIX="costs")
    sse = SSE(app)
    backend = core_of(app).backend
    counts = backend.counts  # type: ignore[attr-defined]
    counts._start_process()
    counts._process = "another-process"  # what this process reads: another's 1,000 channels
    counts._call(True, {f"channel-{n}": 1 for n in range(1000)})

    def cost(action) -> float:  # type: ignore[no-untyped-def]
        calls_before, usec_before = script_stats(redis_server)
        for n in range(calls):
            action(n)
        calls_after, usec_after = script_stats(redis_server)
        return (usec_after - usec_before) / (calls_after - calls_before)

    ending = cost(lambda n: backend.endings.send(Ending(None, f"user-{n}")))
    write = cost(lambda n: counts._call(False, {f"channel-{(n * 20 + k) % 1000}": 1 + n % 3 for k in range(20)}))
    counts._process = "this-process"
    read = cost(lambda n: counts.read())
    read_one = cost(lambda n: counts.read(f"channel-{n % 1000}"))
    print(f"Redis µs per call: end_streams {ending:.1f}, a count write of 20 changes {write:.1f}, "
          f"reading the counts of another process with 1,000 channels: all {read:.1f}, "
          f"one channel {read_one:.1f}")  # fmt: skip
    sse.close()


def measure_index(most: int, calls: int = 2000) -> None:
    """µs per ending at 1,000 .. ``most`` unmatched streams, each call ending two streams it first adds."""
    import gevent

    from flask_sse_stream.access import Ending
    from flask_sse_stream.fanout import Fanout
    from flask_sse_stream.stream import Stream

    def per_call(unmatched: int, ending: Ending) -> float:
        fanout = Fanout()
        for n in range(unmatched):
            fanout.add(Stream((f"room-{n % 500}",), f"10.0.{n // 250}.{n % 250}", 16,
                              subjects=frozenset({f"user-{n}"})), most + 10)  # fmt: skip
        spent: list[float] = []
        for _ in range(calls):
            victims = [Stream(("victims",), "10.9.9.9", 16, subjects=frozenset({"victim"})) for _ in range(2)]
            for victim in victims:
                fanout.add(victim, most + 10)
            started = time.perf_counter()
            ended = fanout.end(ending)
            spent.append(time.perf_counter() - started)
            assert ended == 2, ended
            for victim in victims:
                fanout.remove(victim)
        return statistics.median(spent) * 1e6  # the median: a garbage collection is not the ending's cost

    def run() -> None:
        sizes = sorted({1000, 5000, 10_000, most})
        endings = {"subject": Ending(None, "victim"), "channel": Ending("victims", None),
                   "both": Ending("victims", "victim")}  # fmt: skip
        print(f"{'unmatched':>10} " + " ".join(f"{name + ' µs':>12} {'ratio':>6}" for name in endings))
        floor: dict[str, float] = {}
        for size in sizes:
            cells = []
            for name, ending in endings.items():
                cost = per_call(size, ending)
                floor.setdefault(name, cost)
                cells.append(f"{cost:12.1f} {cost / floor[name]:6.2f}")
            print(f"{size:>10} " + " ".join(cells), flush=True)

    gevent.spawn(run).join()  # on a hub: the cut after GRACE is a timer, not a thread per call


if __name__ == "__main__":
    main()
