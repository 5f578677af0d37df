"""Real servers for the tests: in a thread of this process, or as processes.

The test process is not monkey-patched. ``ThreadServer`` runs an app on
gevent's ``WSGIServer`` in an OS thread with its own hub, so the test's own
thread (a plain thread, like a user's script or a dev-server request) sends
events across threads, as users do. ``ProcessServer`` runs a command (gevent
monkey-patched, ``flask run`` or gunicorn) and stops its process group.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from werkzeug.serving import make_server

from flask_sse_stream.concurrency import wait_serving

ROOT = Path(__file__).resolve().parents[2]


#: Where test servers listen: below the kernel's ephemeral range (32768-60999 by
#: default), from which it picks the source port of every outgoing connection.
#: A port it handed out as free from that range could be taken by one of
#: those (to Redis, to another test server) before the server binds it.
_PORTS = range(10000, 32000)
_random = random.Random()


def free_port() -> int:
    """A loopback port free now, outside the ephemeral range (so no outgoing connection takes it)."""
    low, high = ephemeral_range()
    for _ in range(1000):
        port = _random.choice(_PORTS)
        if low <= port <= high:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port outside the ephemeral range after 1000 tries")


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class ThreadServer:
    """``app`` on gevent's WSGIServer, in a thread with its own hub."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self._started = threading.Event()
        self._control: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._serve, args=(app,), daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _serve(self, app: Any) -> None:
        server = WSGIServer(("127.0.0.1", self.port), app, spawn=Pool(), log=None)
        stopping = gevent.event.Event()
        self._control.update(loop=gevent.get_hub().loop, stopping=stopping)
        server.start()
        self._started.set()
        wait_serving(stopping)
        server.stop(timeout=0.1)

    def call_in_hub(self, function: Any) -> None:
        """Run ``function`` in the server's hub thread (as a greenlet there would)."""
        self._control["loop"].run_callback_threadsafe(function)

    def stop(self) -> None:
        self._control["loop"].run_callback_threadsafe(self._control["stopping"].set)
        self._thread.join(5)


class WerkzeugServer:
    """``app`` on werkzeug's threaded development server (``flask run``), in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


class ProcessServer:
    """A server command in its own process group, stopped by its process id."""

    def __init__(
        self, args: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None, cwd: Path = ROOT
    ) -> None:
        self.port = port
        self.log_path = log
        merged = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), **(env or {}))
        self._log_file = open(log, "wb") if log else None  # noqa: SIM115
        out = self._log_file or subprocess.DEVNULL
        self.process = subprocess.Popen(
            args, env=merged, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_port(port, process=self.process)
        except BaseException:
            self.stop()
            raise

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def stop(self) -> None:
        stop_process_group(self.process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group of ``process`` (started with start_new_session), SIGKILL after 10 s."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass


PYTHON = sys.executable
