"""The seed's walkthrough as a program: a page on one port, its stream on another.

``python -m example_app`` serves the page (a read-only textarea) on
``--page-port`` and the stream, with :func:`flask_sse_stream.start_sse_tcp_port`,
on ``--stream-port``. Each line typed at the ``>`` prompt is sent to every open
page; ``!id TEXT`` sends TEXT with an id, so pages opened later show it too.

Nothing is monkey-patched: each server runs in a thread with its own gevent
hub, so the main thread can block on ``input()`` while both keep serving.
"""

from __future__ import annotations

import argparse
import queue
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import gevent.event
from flask import Flask, render_template
from gevent.pywsgi import WSGIServer

from flask_sse_stream import make_sse, send_new_event, start_sse_tcp_port

HELP = "Type a line to send it to every open page; '!id TEXT' sends TEXT with an id; '!quit' (or Ctrl-D) stops."


def create_page_app(stream_port: int) -> Flask:
    """The page: a read-only textarea that shows the stream on ``stream_port`` of the page's host."""
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", stream_port=stream_port)

    return app


def serve_in_background(app: Flask, host: str, port: int) -> Callable[[], None]:
    """Serve ``app`` on gevent's ``WSGIServer`` in a thread with its own hub; return ``stop()``.

    Raises :class:`OSError` here if ``host:port`` cannot be listened on.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    listener = socket.create_server((host, port), family=family)
    listener.setblocking(False)
    handles: queue.SimpleQueue[tuple[Any, gevent.event.Event]] = queue.SimpleQueue()

    def serve() -> None:
        server = WSGIServer(listener, app, log=None)
        server.start()
        stopping = gevent.event.Event()
        handles.put((gevent.get_hub().loop, stopping))
        stopping.wait()
        server.stop(timeout=1)

    thread = threading.Thread(target=serve, name=f"page-server-{port}", daemon=True)
    thread.start()
    loop, stopping = handles.get()

    def stop() -> None:
        # A gevent hub belongs to its thread: hand it the wake-up.
        loop.run_callback_threadsafe(stopping.set)
        thread.join(2)

    return stop


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m example_app",
        description="Serve a page and its server-sent event stream; send what you type to every open page.",
        epilog=HELP,
    )
    parser.add_argument("--host", default="localhost", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--page-port", type=int, default=8080, help="port of the page (default: %(default)s)")
    parser.add_argument("--stream-port", type=int, default=8122, help="port of the stream (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    a_sse = make_sse()
    try:
        # reuse=True: the program can run again at once after it stops, even
        # while a client that has not closed its end still holds the port.
        stop_stream = start_sse_tcp_port(args.stream_port, a_sse, reuse=True, hostname=args.host)
    except OSError as error:
        print(f"cannot serve the stream on {args.host}:{args.stream_port}: {error}", file=sys.stderr)
        return 1
    try:
        stop_page = serve_in_background(create_page_app(args.stream_port), args.host, args.page_port)
    except OSError as error:
        stop_stream()
        print(f"cannot serve the page on {args.host}:{args.page_port}: {error}", file=sys.stderr)
        return 1

    print(f"Open http://{args.host}:{args.page_port}/ (stream at http://{args.host}:{args.stream_port}/).")
    print(HELP)
    try:
        while (line := input("> ")) != "!quit":
            if line.startswith("!id "):
                print(f"sent with id {send_new_event(a_sse, data=line[4:], id=True)}")
            elif line.startswith("!"):
                print(HELP)
            else:
                send_new_event(a_sse, data=line)
    except (EOFError, KeyboardInterrupt):
        print()
    finally:
        stop_page()
        stop_stream()
    return 0
