"""Faults, on a schedule drawn from ``random.Random(seed)``, and the configuration that makes the store forget.

The schedule has two strands, each drawn from the seed. The faults, one
after another (``faults`` does them): Redis killed and restarted empty or
from a snapshot, its id key deleted, its subscriptions killed, stalled
(``redis-stall``: ``DEBUG SLEEP``, past the library's 5 s command timeout in
runs of ``LONG_STALLS_FROM`` seconds or more; later faults go on meanwhile)
or paused (``redis-pause``: ``CLIENT PAUSE`` ALL or WRITE); a gunicorn worker
killed or terminated; the in-process server restarted; a client that stops
reading until it is cut; ``end-cold``: a worker (the server) restarted and
an ending sent while probes are being authorized on the new one (see
``endings``). And the endings (``end-channel``, ``end-subject``), at their
own pace, overlapping the faults. The application's own faults (timeouts
and kills around sends, short-lived threads) are sender paths (see
``senders``). Eviction and expiry come from the drawn SSE_MAX_HISTORY and
SSE_HISTORY_TTL.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from functools import partial
from typing import Any

from .clients import Client
from .deploy import TOKEN, Deployment, MemoryDeployment, RedisDeployment
from .endings import Ender, cold_ending
from .faults import redis_fault, server_restart, start_stall, worker_fault
from .history import Clock, Connection, Ending, Fault

CHANNELS = [f"c{n}" for n in range(6)]
KINDS = {
    "redis": [
        "redis-restart-empty", "redis-snapshot-restore", "redis-del-id", "redis-kill-pubsub", "redis-stall",
        "redis-pause", "worker-kill", "worker-term", "client-stall", "end-cold",
    ],
    "memory": ["server-term", "server-kill", "client-stall", "end-cold"],
}  # fmt: skip
ENDING_KINDS = ["end-channel", "end-subject"]
DEFAULT_MAX_HISTORY = 1000
#: Runs of at least this many seconds stall Redis past the library's command timeout (5 s).
LONG_STALLS_FROM = 8.0


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
    """Faults at drawn times in the run, one after another, then the endings; a snapshot restore draws its SAVE.

    ``kinds`` narrows the faults to those of the deployment that it names (all of them by default).
    """
    allowed = [kind for kind in KINDS[deployment] if kinds is None or kind in kinds]
    schedule: list[dict[str, Any]] = []
    at = rng.uniform(0.5, 1.5)
    stalled_until = 0.0
    while allowed and at < seconds - 1.0:
        # Stalls queue up in Redis: no new one until the last has ended (other faults may overlap it).
        choices = [kind for kind in allowed if kind != "redis-stall" or at >= stalled_until]
        if not choices:
            at = stalled_until
            continue
        kind = rng.choice(choices)
        step: dict[str, Any] = {"kind": kind, "at": round(at, 3), "down": round(rng.uniform(0.1, 1.0), 3)}
        if kind == "redis-snapshot-restore":
            save_at = round(max(0.2, at - rng.uniform(0.5, 3.0)), 3)
            schedule.append({"kind": "redis-save", "at": save_at, "down": 0})
        if kind.startswith(("worker", "client", "end")):
            step["pick"] = rng.random()
        step.update(_details(rng, kind, seconds))
        schedule.append(step)
        if kind == "redis-stall":
            stalled_until = at + step["down"]
        # A stall runs in a thread of its own: what follows need not wait for its end.
        at += (0 if kind == "redis-stall" else step["down"]) + rng.uniform(0.8, 2.5)
    schedule += _endings(rng, seconds, kinds)
    schedule.sort(key=lambda step: step["at"])
    return schedule


def _details(rng: random.Random, kind: str, seconds: float) -> dict[str, Any]:
    long = seconds >= LONG_STALLS_FROM
    if kind == "redis-stall":
        return {"down": round(rng.uniform(5.5, 9.0) if long else rng.uniform(0.3, 1.5), 3)}
    if kind == "redis-pause":
        past_timeout = long and rng.random() < 0.3
        down = rng.uniform(5.5, 7.0) if past_timeout else rng.uniform(0.2, 1.5)
        return {"down": round(down, 3), "mode": rng.choice(["ALL", "WRITE"])}
    if kind == "end-cold":
        return {
            "kill": rng.random() < 0.5,
            "probes": rng.randint(3, 6),
            "delay": round(rng.uniform(0.3, 0.6), 3),
            "by": rng.choice(["subject", "subject", "channel"]),
            "channel": rng.choice(CHANNELS),
        }
    return {}


def _endings(rng: random.Random, seconds: float, kinds: list[str] | None) -> list[dict[str, Any]]:
    allowed = [kind for kind in ENDING_KINDS if kinds is None or kind in kinds]
    steps = []
    at = rng.uniform(0.5, 2.0)
    while allowed and at < seconds - 0.5:
        kind = rng.choice(allowed)
        draws = {name: rng.random() for name in ("aim", "pick", "which")}
        revoke, both = rng.random() < 0.5, rng.random() < 0.2
        steps.append({"kind": kind, "at": round(at, 3), **draws, "revoke": revoke, "both": both})
        at += rng.uniform(1.0, 3.0)
    return steps


class Nemesis(threading.Thread):
    """Runs a schedule against a deployment, recording each fault with its start and end, and the endings."""

    def __init__(self, deployment: Deployment, schedule: list[dict[str, Any]], clients: list[Client], clock: Clock):
        super().__init__(name="nemesis", daemon=True)
        self.deployment = deployment
        self.schedule = [step for step in schedule if step["kind"] not in ENDING_KINDS]
        self.clients = clients
        self.clock = clock
        self.faults: list[Fault] = []
        self.probes: list[Connection] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._snapshot = deployment.directory / "snapshot.rdb"
        self._numbers = itertools.count()
        self._cold: list[Ending] = []
        self._lock = threading.Lock()
        self._stalls: list[threading.Thread] = []
        endings = [step for step in schedule if step["kind"] in ENDING_KINDS]
        self.ender = Ender(deployment.port, endings, clients, clock, self._numbers)

    @property
    def endings(self) -> list[Ending]:
        return sorted(self.ender.endings + self._cold, key=lambda ending: ending.invoke)

    def run(self) -> None:
        self.ender.start()
        try:
            for step in self.schedule:
                if self.stopping.wait(max(0.0, step["at"] - self.clock())):
                    break
                start = self.clock()
                fault = Fault(step["kind"], start, start)
                if step["kind"] == "redis-stall" and isinstance(self.deployment, RedisDeployment):
                    self._stalls.append(start_stall(self.deployment, step, fault, partial(self._done, fault)))
                    continue
                self._apply(step, fault)
                self._done(fault)
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error
        finally:
            self.ender.stopping.set()
            self.ender.join()
            for stall in self._stalls:
                stall.join()
            self.error = self.error or self.ender.error

    def _done(self, fault: Fault) -> None:
        fault.end = self.clock()
        with self._lock:
            self.faults.append(fault)

    def _apply(self, step: dict[str, Any], fault: Fault) -> None:
        kind = step["kind"]
        deployment = self.deployment
        if kind == "client-stall":
            client = self.clients[int(step["pick"] * len(self.clients))]
            client.stall(step["down"] + 1.0)
            fault.detail = f"{client.client} stops reading for {step['down'] + 1.0:.2f} s"
            time.sleep(step["down"] + 1.0)
        elif kind == "end-cold":
            self._cold_ending(step, fault)
        elif isinstance(deployment, MemoryDeployment):
            server_restart(deployment, kind == "server-kill", fault)
        elif kind.startswith("worker"):
            worker_fault(deployment, kind == "worker-kill", step["pick"], fault)
        else:
            redis_fault(deployment, step, fault, self._snapshot)

    def _cold_ending(self, step: dict[str, Any], fault: Fault) -> None:
        """Restart a worker (the server), then end the streams being authorized on the new one."""
        deployment = self.deployment
        before = deployment.processes()
        if isinstance(deployment, MemoryDeployment):
            server_restart(deployment, step["kill"], fault)
        else:
            worker_fault(deployment, step["kill"], step["pick"], fault)
        restarted = fault.detail
        probes, ending, detail = cold_ending(deployment, step, before, self.clock, next(self._numbers))
        self.probes += probes
        self._cold.append(ending)
        fault.detail = f"{restarted}; {detail}"
