"""The walkthrough's page and stream, with the stream server stopped and started on command.

Usage: ``python -m tests.apps.reconnect PAGE_PORT STREAM_PORT``

Serves ``example_app``'s page on ``127.0.0.1:PAGE_PORT`` and, with
``start_sse_tcp_port(STREAM_PORT, a_sse, reuse=True)``, the stream of one
``a_sse`` on ``127.0.0.1:STREAM_PORT``. Prints ``ready``, then reads commands
from stdin, one a line, and answers each with one line:

- ``send TEXT``: a data-only event; ``ok``.
- ``send-id TEXT``: an event with an id; ``ok ID``.
- ``retry MS``: an event with only ``retry: MS``; ``ok``.
- ``stop``: stops the stream server (its streams end); ``ok``.
- ``start``: serves the same ``a_sse`` on the same port again; ``ok``.
- ``quit`` (or end of input): stops both servers and exits.
"""

from __future__ import annotations

import sys

from example_app.walkthrough import create_page_app, serve_in_background
from flask_sse_stream import make_sse, send_new_event, start_sse_tcp_port

HOST = "127.0.0.1"


def main() -> None:
    page_port, stream_port = int(sys.argv[1]), int(sys.argv[2])
    a_sse = make_sse()
    stop_stream = start_sse_tcp_port(stream_port, a_sse, reuse=True, hostname=HOST)
    stop_page = serve_in_background(create_page_app(stream_port), HOST, page_port)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, argument = line.rstrip("\n").partition(" ")
        if command == "quit":
            break
        answer = "ok"
        if command == "send":
            send_new_event(a_sse, data=argument)
        elif command == "send-id":
            answer = f"ok {send_new_event(a_sse, data=argument, id=True)}"
        elif command == "retry":
            send_new_event(a_sse, retry=int(argument))
        elif command == "stop":
            stop_stream()
        elif command == "start":
            stop_stream = start_sse_tcp_port(stream_port, a_sse, reuse=True, hostname=HOST)
        else:
            answer = f"unknown command {command!r}"
        print(answer, flush=True)
    stop_page()
    stop_stream()


if __name__ == "__main__":
    main()
