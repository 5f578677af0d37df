"""What the app holds, sampled during the run and after it: the resources ``check.resources`` judges.

Every ``INTERVAL`` seconds, from outside (``/proc``, through psutil), each
process of the app: its open file descriptors, threads, sockets to Redis and
sockets on the app's port; and Redis: ``PUBSUB CHANNELS`` and ``CLIENT LIST
TYPE pubsub``, each subscription connection told to its process by its port.
A Redis that does not answer within ``REDIS_TIMEOUT`` (stalled, paused,
down) gives no sample that time. After the run, once the clients have left,
:meth:`Monitor.final` waits (up to ``SETTLE``) for the app to have let go of
them, asks every process for its hubs (``checker.app_access``), and takes the
final samples, with every key of Redis. The hub samples the processes wrote
are read by :func:`hub_samples`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import psutil
import redis

from .deploy import Deployment, RedisDeployment
from .history import Clock, HubSample, ProcessSample, RedisSample

INTERVAL = 1.0
REDIS_TIMEOUT = 1.0
#: Seconds the final settle may take: a stream notices its client left within two SSE_KEEPALIVE (0.5 s),
#: and a subscription that Redis's faults disturbed is made again within the library's recovery
#: time (``check.causes.REDIS_RECOVERY``); past that, what is still held is a leak.
SETTLE = 10.0
#: Seconds to wait for every process's final hub sample.
HUBS_WAIT = 10.0


class Monitor(threading.Thread):
    def __init__(self, deployment: Deployment, clock: Clock) -> None:
        super().__init__(name="monitor", daemon=True)
        self.deployment = deployment
        self.clock = clock
        self.processes: list[ProcessSample] = []
        self.redis: list[RedisSample] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._redis_port = deployment.redis.port if isinstance(deployment, RedisDeployment) else None

    def run(self) -> None:
        try:
            while not self.stopping.wait(INTERVAL):
                self.sample("run")
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error

    def sample(self, phase: str, keys: bool = False) -> tuple[list[ProcessSample], RedisSample | None]:
        # Redis first: a subscription it lists is then in its process's sockets, unless closed meanwhile.
        pubsub = self._redis(phase, keys)
        processes = [s for pid in self.deployment.processes() if (s := self._process(pid, phase)) is not None]
        if pubsub is not None:
            owner = {port: s.pid for s in processes for port in s.redis_ports}
            pubsub.pubsub = [[port, owner.get(port or 0)] for port, _ in pubsub.pubsub]
            pubsub.workers = [s.pid for s in processes]
            self.redis.append(pubsub)
        self.processes += processes
        return processes, pubsub

    def _process(self, pid: int, phase: str) -> ProcessSample | None:
        try:
            process = psutil.Process(pid)
            t = self.clock()
            fds, threads = process.num_fds(), process.num_threads()
            listed = process.net_connections("all")
            socket_fds = _socket_fds(pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, FileNotFoundError):
            return None
        sockets = [s for s in listed if s.type == socket.SOCK_STREAM and s.family in (socket.AF_INET, socket.AF_INET6)]
        to_redis = [s for s in sockets if s.raddr and s.raddr.port == self._redis_port]
        established = sum(1 for s in to_redis if s.status == psutil.CONN_ESTABLISHED)
        port = self.deployment.port
        clients = sum(1 for s in sockets if s.laddr.port == port and s.status != psutil.CONN_LISTEN)
        ports = sorted(s.laddr.port for s in to_redis)
        unlisted = max(0, socket_fds - len(listed))
        return ProcessSample(t, pid, phase, fds, threads, len(to_redis), established, clients, ports, unlisted)

    def _redis(self, phase: str, keys: bool) -> RedisSample | None:
        if not isinstance(self.deployment, RedisDeployment):
            return None
        try:
            with self.deployment.redis_client(REDIS_TIMEOUT) as client:
                t = self.clock()
                channels = sorted(name.decode() for name in client.pubsub_channels())
                ports = [int(c["addr"].rsplit(":", 1)[1]) for c in client.client_list(_type="pubsub")]
                names = sorted(key.decode() for key in client.scan_iter(count=1000)) if keys else None
        except (redis.RedisError, OSError):
            return None
        return RedisSample(t, phase, channels, [[port, None] for port in ports], [], names)

    def final(self, prefix: str) -> None:
        """Once the clients have left: wait for the app to let go of them, then the final samples."""
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline and not self._let_go(prefix):
            time.sleep(0.1)
        pids = self.deployment.processes()
        asked = self.deployment.directory / "sample-request"
        asked.write_text("final\n")
        deadline = time.monotonic() + HUBS_WAIT
        while time.monotonic() < deadline and not all(_has_final(self.deployment.directory, pid) for pid in pids):
            time.sleep(0.1)
        self.sample("final", keys=True)

    def _let_go(self, prefix: str) -> bool:
        """No process has a client socket (one whose client has gone included), no channel's subscription is held,
        one subscription per process."""
        processes = [s for pid in self.deployment.processes() if (s := self._process(pid, "settle")) is not None]
        if any(s.clients or s.unlisted for s in processes):
            return False
        pubsub = self._redis("settle", keys=False)
        if not isinstance(self.deployment, RedisDeployment):
            return True
        if pubsub is None:
            return False
        per_channel = f"{{{prefix}}}:c:"
        return not any(c.startswith(per_channel) for c in pubsub.channels) and len(pubsub.pubsub) <= len(processes)


def wait_loaded(deployment: Deployment, timeout: float = 30.0) -> None:
    """Until every process of the app has loaded it (written its first hub sample): where a run starts."""
    deadline = time.monotonic() + timeout
    while not all((deployment.directory / f"hubs-{pid}.jsonl").exists() for pid in deployment.processes()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the app's processes had not all loaded it after {timeout} s")
        time.sleep(0.05)


def _socket_fds(pid: int) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return count


def _has_final(directory: Path, pid: int) -> bool:
    path = directory / f"hubs-{pid}.jsonl"
    try:
        return any(json.loads(line)["phase"] == "final" for line in path.read_text().splitlines() if line)
    except (FileNotFoundError, ValueError):
        return False


def hub_samples(directory: Path, clock: Clock) -> list[HubSample]:
    """What the processes of the app wrote of their hubs, in checker time."""
    samples = []
    for path in sorted(directory.glob("hubs-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a SIGKILL
            samples.append(HubSample(clock.of(record["t"]), record["pid"], record["phase"], record["hubs"]))
    return sorted(samples, key=lambda sample: sample.t)
