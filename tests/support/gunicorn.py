"""One gunicorn gevent worker serving the basic app (tests/apps/basic.py), stopped by process group."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

from .servers import PYTHON, ProcessServer, free_port

#: Far longer than a test waits: a stream that ends must not need it.
GRACEFUL_TIMEOUT = 60


class OneWorker:
    """``gunicorn -k gevent -w 1`` with the basic app; ``env`` configures it (``SSE_REDIS_URL``...)."""

    def __init__(self, log: Path, **env: str) -> None:
        self.port = free_port()
        command = [
            PYTHON, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--no-control-socket",
            "--graceful-timeout", str(GRACEFUL_TIMEOUT), "-b", f"127.0.0.1:{self.port}",
            "tests.apps.basic:create_app()",
        ]  # fmt: skip
        self.server = ProcessServer(command, self.port, env=env, log=log)

    def worker(self) -> int:
        (child,) = psutil.Process(self.server.process.pid).children()
        return int(child.pid)

    def publish(self, **fields: str) -> tuple[int, dict[str, object]]:
        """POST /publish with ``fields``; the worker that answered and its JSON answer."""
        body = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/publish", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.headers["X-Worker"]), json.loads(response.read())

    def why(self) -> str:
        return f"\n--- gunicorn log ---\n{self.server.output}"

    def stop(self) -> None:
        self.server.stop()
