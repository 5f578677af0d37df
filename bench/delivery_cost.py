"""Instructions per delivery on the in-process path, counted by valgrind: repeatable where CPU time is not.

One monkey-patched process: gevent's WSGIServer with the public API's app,
`--clients` streams read by greenlets of the same process, and `--events`
events sent with `send_new_event`. Under `valgrind --tool=callgrind` the
instruction count is the same from run to run whatever else the machine does,
so two runs that differ only in the number of events give the instructions per
delivery (the setup cancels out):

    bench/delivery_cost.py --compare /path/to/older/checkout     # runs valgrind itself

It counts user-space instructions (the kernel's part of a send is the same for
any version), with the interpreter and gevent as they are installed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile


def serve_and_send(clients: int, events: int) -> None:
    from gevent import monkey

    monkey.patch_all()
    import socket

    import gevent
    from flask import Flask
    from gevent.pywsgi import WSGIServer

    from flask_sse_stream import SSE

    app = Flask("cost")
    sse = SSE(app)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    server = WSGIServer(listener, app, log=None)
    server.start()
    received = [0]

    def read() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: cost\r\n\r\n")
        while data := sock.recv(65536):
            received[0] += data.count(b"\ndata: ")

    readers = [gevent.spawn(read) for _ in range(clients)]
    while len(sse.connections) < clients:
        gevent.sleep(0.01)
    for n in range(events):
        sse.send_new_event(data=f"event {n} " + "x" * 90)
        gevent.sleep(0)  # one turn of the loop per event: each is fanned out alone
    while received[0] < clients * events:
        gevent.sleep(0.01)
    gevent.killall(readers)
    server.stop()


def instructions(pythonpath: str | None, clients: int, events: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__]
        command += ["--run", "--clients", str(clients), "--events", str(events)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    match = re.search(r"Collected : (\d+)", result.stderr)
    assert match, result.stderr[-2000:]
    return int(match.group(1))


def per_delivery(pythonpath: str | None, clients: int, few: int, many: int) -> float:
    return (instructions(pythonpath, clients, many) - instructions(pythonpath, clients, few)) / (clients * (many - few))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="(internal) serve and send, under valgrind")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--many", type=int, default=220)
    parser.add_argument("--compare", default=None, help="a checkout of another version, put first on PYTHONPATH")
    args = parser.parse_args()
    if args.run:
        serve_and_send(args.clients, args.events)
        return 0
    this = per_delivery(None, args.clients, args.few, args.many)
    print(f"this checkout: {this:,.0f} instructions per delivery")
    if args.compare:
        other = per_delivery(args.compare, args.clients, args.few, args.many)
        print(f"{args.compare}: {other:,.0f} instructions per delivery; ratio {this / other:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
