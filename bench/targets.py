"""Start a target of a targets.conf file (the shared harness's format) outside the harness.

For the measurements the harness does not make (bench/redis_clients.py,
bench/replay.py): a target runs in its file's folder with PORT set and the
harness's venv and apps/ first on PATH, in its own process group.
"""

from __future__ import annotations

import os
import re
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
    with started(command, folder) as (port, _):
        yield port


@contextmanager
def started(
    command: str, folder: Path, env: dict[str, str] | None = None, cpus: set[int] | None = None, log: Path | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Run a target command (extra ``env``, pinned to ``cpus``); yield (port, process) once it listens.

    The target runs in its own session: on the way out (an exception, SIGTERM
    turned into SystemExit by the caller) its process group gets SIGTERM,
    then SIGKILL after 10 s.
    """
    home = Path(os.environ.get("BENCH_HOME", SHARED))
    port = free_port_pair()
    env = dict(os.environ, **(env or {}), PORT=str(port), BENCH_HOME=str(home))
    env["PATH"] = f"{home / '.venv' / 'bin'}:{SHARED / 'apps'}:{env['PATH']}"
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        ["bash", "-c", command], cwd=folder, env=env, start_new_session=True,
        stdout=output, stderr=output, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
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
        yield port, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log:
            output.close()


def tree(root: int) -> list[int]:
    """The pid ``root`` and every process under it (from /proc/*/stat's parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def name_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` (sum_exec_runtime from schedstat, ns resolution); 0 once gone."""
    try:
        tasks = Path(f"/proc/{pid}/task")
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9
    except (OSError, ValueError):
        return 0.0


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample(root: int) -> dict[int, tuple[str, float, int]]:
    """pid -> (name, CPU seconds, RSS bytes) over the process tree of ``root``."""
    return {pid: (name_of(pid), cpu_seconds(pid), rss_bytes(pid)) for pid in tree(root)}


def cpu_by_name(
    before: dict[int, tuple[str, float, int]], after: dict[int, tuple[str, float, int]]
) -> dict[str, float]:
    """CPU seconds spent between two samples, summed per process name (a process gone since counts 0)."""
    spent: dict[str, float] = {}
    for pid, (name, cpu, _) in after.items():
        spent[name] = spent.get(name, 0.0) + cpu - (before[pid][1] if pid in before else 0.0)
    return spent


def publish(port: int, data: bytes = b"probe", with_id: int | None = None, channel: str = "bench") -> None:
    """POST /publish of the harness contract, on a connection of its own."""
    query = f"channel={channel}" + (f"&id={with_id}" if with_id is not None else "")
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(
            f"POST /publish?{query} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        # Until the whole answer is in (or the server closes): `limit` keeps the connection open.
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, found, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head) if found else None
            if length and len(body) >= int(length[1]):
                break
