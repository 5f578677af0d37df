"""Run ``basic.create_app()`` on werkzeug's server, monkey-patched first, with or without threads.

Usage: ``python -m tests.apps.werkzeug_server PORT threaded|single``. Without
threads werkzeug answers in HTTP/1.0 whatever the request's version; with
them, in HTTP/1.1 with chunked bodies (even to an HTTP/1.0 request).
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from werkzeug.serving import make_server  # noqa: E402

from tests.apps.basic import create_app  # noqa: E402


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    server = make_server("127.0.0.1", port, create_app(), threaded=mode == "threaded")
    print(f"serving on 127.0.0.1:{port} ({mode})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
