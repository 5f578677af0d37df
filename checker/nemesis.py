"""Faults, on a schedule drawn from ``random.Random(seed)``, and the configuration that makes the store forget.

Redis deployment: Redis killed (SIGKILL) and restarted empty; a snapshot
taken (``SAVE``, the dump.rdb kept aside) and later Redis killed and restarted
from it; the id key deleted; the subscription connections killed
(``CLIENT KILL TYPE pubsub``); a gunicorn worker killed with SIGKILL or
SIGTERM (gunicorn starts another). In-process deployment: the server process
restarted (SIGTERM or SIGKILL: either way its store is gone). Both: a client
that stops reading until it is cut. Eviction and expiry come from the drawn
SSE_MAX_HISTORY and SSE_HISTORY_TTL.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from .clients import Client
from .deploy import PREFIX, TOKEN, Deployment, MemoryDeployment, RedisDeployment
from .history import Fault

KINDS = {
    "redis": [
        "redis-restart-empty", "redis-snapshot-restore", "redis-del-id", "redis-kill-pubsub",
        "worker-kill", "worker-term", "client-stall",
    ],
    "memory": ["server-term", "server-kill", "client-stall"],
}  # fmt: skip
DEFAULT_MAX_HISTORY = 1000


def draw_config(rng: random.Random) -> dict[str, Any]:
    """The SSE_* configuration of a run."""
    roll = rng.random()
    max_history = rng.randint(20, 200) if roll < 0.5 else 0 if roll < 0.65 else None
    ttl = round(rng.uniform(1.0, 3.0), 2) if rng.random() < 0.35 else None
    return {
        "SSE_MAX_HISTORY": max_history,
        "SSE_HISTORY_TTL": ttl,
        "SSE_QUEUE_SIZE": rng.randint(16, 64),
        "SSE_KEEPALIVE": 0.5,
        "SSE_PUBLISH_TOKEN": TOKEN,
        "SSE_REDIS_SUBSCRIBE": rng.choice(["channels", "app"]),
    }


def draw_schedule(
    rng: random.Random, deployment: str, seconds: float, kinds: list[str] | None = None
) -> list[dict[str, Any]]:
    """Faults at drawn times in the run, one after another; a snapshot restore draws its SAVE earlier.

    ``kinds`` narrows the faults to those of the deployment that it names (all of them by default).
    """
    allowed = [kind for kind in KINDS[deployment] if kinds is None or kind in kinds]
    schedule: list[dict[str, Any]] = []
    at = rng.uniform(0.5, 1.5)
    while allowed and at < seconds - 1.0:
        kind = rng.choice(allowed)
        step: dict[str, Any] = {"kind": kind, "at": round(at, 3), "down": round(rng.uniform(0.1, 1.0), 3)}
        if kind == "redis-snapshot-restore":
            save_at = round(max(0.2, at - rng.uniform(0.5, 3.0)), 3)
            schedule.append({"kind": "redis-save", "at": save_at, "down": 0})
        if kind.startswith(("worker", "client")):
            step["pick"] = rng.random()
        schedule.append(step)
        at += step["down"] + rng.uniform(0.8, 2.5)
    schedule.sort(key=lambda step: step["at"])
    return schedule


class Nemesis(threading.Thread):
    """Runs a schedule against a deployment, recording each fault with its start and end."""

    def __init__(
        self,
        deployment: Deployment,
        schedule: list[dict[str, Any]],
        clients: list[Client],
        clock: Callable[[], float],
    ) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.deployment = deployment
        self.schedule = schedule
        self.clients = clients
        self.clock = clock
        self.faults: list[Fault] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._snapshot = deployment.directory / "snapshot.rdb"

    def run(self) -> None:
        try:
            for step in self.schedule:
                if self.stopping.wait(max(0.0, step["at"] - self.clock())):
                    return
                start = self.clock()
                fault = Fault(step["kind"], start, start)
                self._apply(step, fault)
                fault.end = self.clock()
                self.faults.append(fault)
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error

    def _apply(self, step: dict[str, Any], fault: Fault) -> None:
        kind = step["kind"]
        if kind == "client-stall":
            client = self.clients[int(step["pick"] * len(self.clients))]
            client.stall(step["down"] + 1.0)
            fault.detail = f"{client.client} stops reading for {step['down'] + 1.0:.2f} s"
            time.sleep(step["down"] + 1.0)
        elif isinstance(self.deployment, MemoryDeployment):
            kill = kind == "server-kill"
            old = self.deployment.restart(kill=kill)
            fault.loses_data = fault.kills_store = True
            fault.killed_pids = [old] if kill else []
            fault.detail = f"server {old} {'killed' if kill else 'terminated'}, {self.deployment.pid()} started"
        else:
            self._redis_fault(self.deployment, step, fault)

    def _redis_fault(self, deployment: RedisDeployment, step: dict[str, Any], fault: Fault) -> None:
        kind = step["kind"]
        redis_dir = deployment.directory / "redis"
        if kind == "redis-save":
            with deployment.redis_client() as client:
                client.save()
            shutil.move(redis_dir / "dump.rdb", self._snapshot)  # a later restart-empty must not load it
            fault.detail = "SAVE, dump.rdb kept aside"
        elif kind in ("redis-restart-empty", "redis-snapshot-restore"):
            restore = kind == "redis-snapshot-restore" and self._snapshot.exists()
            deployment.redis.stop()  # SIGKILL
            time.sleep(step["down"])  # Redis down: sends fail meanwhile
            if restore:
                shutil.copy(self._snapshot, redis_dir / "dump.rdb")
            deployment.redis.start()
            (redis_dir / "dump.rdb").unlink(missing_ok=True)
            fault.loses_data = fault.kills_store = True
            fault.detail = f"down {step['down']:.2f} s, restarted {'from the snapshot' if restore else 'empty'}"
        elif kind == "redis-del-id":
            with deployment.redis_client() as client:
                client.delete(f"{{{PREFIX}}}:id")
            fault.loses_data = True
            fault.detail = f"DEL {{{PREFIX}}}:id"
        elif kind == "redis-kill-pubsub":
            with deployment.redis_client() as client:
                killed = client.client_kill_filter(_type="pubsub")
            fault.detail = f"CLIENT KILL TYPE pubsub: {killed}"
        else:
            self._worker_fault(deployment, step, fault)

    def _worker_fault(self, deployment: RedisDeployment, step: dict[str, Any], fault: Fault) -> None:
        workers = deployment.workers()
        if not workers:
            fault.detail = "no worker to signal"
            return
        victim = workers[int(step["pick"] * len(workers))]
        kill = step["kind"] == "worker-kill"
        try:
            os.kill(victim, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            fault.detail = f"worker {victim} already gone"
            return
        fault.killed_pids = [victim] if kill else []
        again = 0
        if not kill:
            # A worker that is still booting (gevent's monkey-patching comes first) runs the master's
            # signal handlers, which drop a SIGTERM: it stays. Signal it again until it goes, as an
            # operator would.
            while not _gone(deployment, victim, 3.0) and again < 5:
                again += 1
                try:
                    os.kill(victim, signal.SIGTERM)
                except ProcessLookupError:
                    break
        deployment.wait_ready(without=victim)  # gunicorn starts another
        fault.detail = f"worker {victim} {'killed' if kill else 'terminated'}; workers now {deployment.workers()}"
        if again:
            fault.detail += f" (SIGTERM sent {again + 1} times: the first came while it was booting)"


def _gone(deployment: RedisDeployment, pid: int, timeout: float) -> bool:
    """Whether worker ``pid`` has left within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid in deployment.workers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
