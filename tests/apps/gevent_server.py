"""Run ``basic.create_app()`` on gevent's WSGIServer, monkey-patched first.

Usage: ``python -m tests.apps.gevent_server PORT [websocket]``; with ``websocket``, gevent-websocket's
``WebSocketHandler`` serves the requests (and accepts WebSocket upgrades).
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from tests.apps.basic import create_app  # noqa: E402


def main() -> None:
    port = int(sys.argv[1])
    options = {}
    if sys.argv[2:] == ["websocket"]:
        from geventwebsocket.handler import WebSocketHandler

        options["handler_class"] = WebSocketHandler
    server = WSGIServer(("127.0.0.1", port), create_app(), **options)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
