"""The faults the nemesis does to a deployment: to Redis, to gunicorn's workers, to the in-process server.

Redis: killed (SIGKILL) and restarted empty, or from a snapshot taken earlier
(``SAVE``, the dump.rdb kept aside); the id key deleted; the subscription
connections killed (``CLIENT KILL TYPE pubsub``); stalled (``DEBUG SLEEP``,
from a thread of its own so the schedule goes on); paused (``CLIENT PAUSE``,
ALL or WRITE). Workers: SIGKILL or SIGTERM (gunicorn starts another). The
in-process server: restarted after SIGTERM or SIGKILL (its store is gone
either way). Each fills in its :class:`~checker.history.Fault`.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .deploy import PREFIX, MemoryDeployment, RedisDeployment
from .history import Fault


def redis_fault(deployment: RedisDeployment, step: dict[str, Any], fault: Fault, snapshot: Path) -> None:
    kind = step["kind"]
    redis_dir = deployment.directory / "redis"
    fault.hits_redis = kind != "redis-save"
    if kind == "redis-save":
        with deployment.redis_client() as client:
            client.save()
        shutil.move(redis_dir / "dump.rdb", snapshot)  # a later restart-empty must not load it
        fault.detail = "SAVE, dump.rdb kept aside"
    elif kind in ("redis-restart-empty", "redis-snapshot-restore"):
        restore = kind == "redis-snapshot-restore" and snapshot.exists()
        deployment.redis.stop()  # SIGKILL
        time.sleep(step["down"])  # Redis down: sends fail meanwhile
        if restore:
            shutil.copy(snapshot, redis_dir / "dump.rdb")
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
    elif kind == "redis-pause":
        ms = int(step["down"] * 1000)
        with deployment.redis_client() as client:
            client.execute_command("CLIENT", "PAUSE", ms, step["mode"])
        fault.stalls_store = True
        time.sleep(step["down"])
        fault.detail = f"CLIENT PAUSE {ms} {step['mode']}"
    else:
        raise ValueError(f"not a Redis fault: {kind!r}")


def start_stall(deployment: RedisDeployment, step: dict[str, Any], fault: Fault, done: Callable[[], None]) -> Any:
    """``DEBUG SLEEP`` on a connection and thread of its own; ``done()`` once Redis answers (or died)."""
    fault.hits_redis = fault.stalls_store = True

    def stall() -> None:
        try:
            with deployment.redis_client() as client:
                client.execute_command("DEBUG", "SLEEP", step["down"])
            fault.detail = f"DEBUG SLEEP {step['down']:.2f}"
        except Exception as error:  # noqa: BLE001 - Redis was killed under it: the stall ended there
            fault.detail = f"DEBUG SLEEP {step['down']:.2f}, cut short: {type(error).__name__}: {error}"
        done()

    thread = threading.Thread(target=stall, name="redis-stall", daemon=True)
    thread.start()
    return thread


def worker_fault(deployment: RedisDeployment, kill: bool, pick: float, fault: Fault) -> int | None:
    """SIGKILL or SIGTERM a worker (``pick`` chooses which) and wait for its replacement; its pid."""
    workers = deployment.workers()
    if not workers:
        fault.detail = "no worker to signal"
        return None
    victim = workers[int(pick * len(workers))]
    try:
        os.kill(victim, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        fault.detail = f"worker {victim} already gone"
        return None
    if kill:
        fault.killed_pids = [victim]
    else:
        fault.stopped_pids = [victim]
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
    return victim


def server_restart(deployment: MemoryDeployment, kill: bool, fault: Fault) -> None:
    old = deployment.restart(kill=kill)
    fault.loses_data = fault.kills_store = True
    if kill:
        fault.killed_pids = [old]
    else:
        fault.stopped_pids = [old]
    fault.detail = f"server {old} {'killed' if kill else 'terminated'}, {deployment.pid()} started"


def _gone(deployment: RedisDeployment, pid: int, timeout: float) -> bool:
    """Whether worker ``pid`` has left within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid in deployment.workers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
