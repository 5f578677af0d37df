"""The in-process deployment: ``checker.app`` on gevent's WSGIServer, monkey-patched, one process.

Usage: ``python -m checker.serve_memory PORT [websocket]``; ``websocket``
runs gevent-websocket's ``WebSocketHandler``. SIGTERM stops the server
(``stop(timeout=1)``, with a pool so that open streams are closed) and exits.
"""

from gevent import monkey

monkey.patch_all()

import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from checker.app import create_app  # noqa: E402


def main() -> None:
    port = int(sys.argv[1])
    options = {}
    if sys.argv[2:] == ["websocket"]:
        from geventwebsocket.handler import WebSocketHandler

        options["handler_class"] = WebSocketHandler
    server = WSGIServer(("127.0.0.1", port), create_app(), spawn=Pool(), log=None, **options)

    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(server.stop, timeout=1))
    server.serve_forever()  # returns once stopped


if __name__ == "__main__":
    main()
