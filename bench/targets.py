"""Start a target of a targets.conf file (the shared harness's format) outside the harness.

For the measurements the harness does not make (bench/redis_clients.py,
bench/replay.py): a target runs in its file's folder with PORT set and the
harness's venv and apps/ first on PATH, in its own process group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"


def read_targets(files: list[Path]) -> dict[str, tuple[str, Path]]:
    """name -> (command, folder) from targets.conf-style files."""
    targets = {}
    for file in files:
        for line in file.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                name, command = line.split(None, 1)
                targets[name] = (command, file.resolve().parent)
    return targets


def free_port_pair() -> int:
    """A free port whose successor is free too (with_redis puts Redis on PORT+1)."""
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            try:
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


@contextmanager
def running(command: str, folder: Path) -> Iterator[int]:
    """Run a target command; yield its port once it listens; stop its process group."""
    home = Path(os.environ.get("BENCH_HOME", SHARED))
    port = free_port_pair()
    env = dict(os.environ, PORT=str(port), BENCH_HOME=str(home))
    env["PATH"] = f"{home / '.venv' / 'bin'}:{SHARED / 'apps'}:{env['PATH']}"
    process = subprocess.Popen(
        ["bash", "-c", command], cwd=folder, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the target did not listen on {port}") from None
                time.sleep(0.1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def publish(port: int, data: bytes = b"probe", with_id: int | None = None, channel: str = "bench") -> None:
    """POST /publish of the harness contract, on a connection of its own."""
    query = f"channel={channel}" + (f"&id={with_id}" if with_id is not None else "")
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(
            f"POST /publish?{query} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        while sock.recv(65536):
            pass
