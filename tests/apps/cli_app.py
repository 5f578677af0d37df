"""The app that the ``flask sse`` command tests run: ``flask --app tests.apps.cli_app sse ...``.

The environment variables ``SSE_REDIS_URL``, ``SSE_REDIS_PREFIX`` and
``SSE_PUBLISH_TOKEN``, when set, configure the extension. Served by
``python -m tests.apps.cli_app PORT`` (gevent's WSGIServer, monkey-patched),
it is also the running server that ``--url`` and Redis reach.
"""

from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

from flask import Flask  # noqa: E402

from flask_sse_stream import SSE  # noqa: E402


def create_app() -> Flask:
    app = Flask(__name__)
    for key in ("SSE_REDIS_URL", "SSE_REDIS_PREFIX", "SSE_PUBLISH_TOKEN"):
        if os.environ.get(key):
            app.config[key] = os.environ[key]
    SSE(app)
    return app


def main() -> None:
    from gevent.pywsgi import WSGIServer

    port = int(sys.argv[1])
    print(f"serving on 127.0.0.1:{port}", flush=True)
    WSGIServer(("127.0.0.1", port), create_app()).serve_forever()


if __name__ == "__main__":
    main()
