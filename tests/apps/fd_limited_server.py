"""``start_sse_tcp_port`` in a process with few file descriptors, driven from its stdin.

Usage: ``python -m tests.apps.fd_limited_server PORT NOFILE HEADER_TIMEOUT``; then lines on stdin:
``send DATA`` (an event), ``hog`` (take every free file descriptor), ``free``
(give them back), ``counts`` (the server's counts, as JSON). Each answers one line.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys

from flask_sse_stream import make_sse, send_new_event, start_sse_tcp_port
from flask_sse_stream.server_http import BoundedServer


def main() -> None:
    port, nofile, header_timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    sse = make_sse(keepalive=60)
    stop = start_sse_tcp_port(port, sse, max_allow_wait=128, header_timeout=header_timeout, reuse=True)
    print("ready", flush=True)
    hogged: list[int] = []
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "send":
            send_new_event(sse, data=argument)
            print("sent", flush=True)
        elif command == "hog":
            try:
                while True:
                    hogged.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            print(f"hogged {len(hogged)}", flush=True)
        elif command == "free":
            for fd in hogged:
                os.close(fd)
            hogged.clear()
            print("freed", flush=True)
        elif command == "counts":
            servers = [o for o in gc.get_objects() if isinstance(o, BoundedServer)]
            server = servers[0]
            print(json.dumps({"limit": server.limit, "connections": len(server.pool), **server.counts}), flush=True)
    stop()


if __name__ == "__main__":
    main()
