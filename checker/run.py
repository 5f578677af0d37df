"""One run: a deployment, clients, senders and a nemesis drawn from a seed; the history they recorded.

The seed draws the configuration, the fault schedule, the server (gevent's
own handler, or gevent-websocket's, under which about half the clients read
the stream over a WebSocket: ``checker.ws_clients``), each client's channels,
transport and behaviour and each sender's paths and channels (each thread has its own
``random.Random``, so that what one draws does not depend on the others'
timing). A monitor samples the app's resources all along. At the end the
nemesis and the senders stop, the deployment settles, the clients read
continuously, and live-only markers go to every channel, round after round,
until every client has one on each of its channels; then the clients leave
and the monitor takes its final samples.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .clients import Client
from .deploy import PREFIX, TOKEN, Deployment, start, wait_until
from .history import OK, Clock, History, Marker, Meta
from .monitor import Monitor, hub_samples, wait_loaded
from .nemesis import CHANNELS, DEFAULT_MAX_HISTORY, Nemesis, draw_config, draw_schedule
from .senders import Sender, killed_at_graceful_timeout, send_once
from .ws_clients import WebSocketClient

SENDERS = 4
#: Seconds between two sends of one sender, on average.
INTERVAL = 0.03
MARKER_ROUNDS = 20
SERVERS = ["gevent", "websocket"]
#: Under gevent-websocket's handler, the share of clients that read the stream over a WebSocket.
WEBSOCKET_CLIENTS = 0.5


@dataclass
class Outcome:
    history: History
    #: Failures of the harness itself (a thread that raised, a deployment that never settled).
    errors: list[str] = field(default_factory=list)
    log: str = ""


def plan(
    deployment: str,
    seed: int,
    seconds: float,
    clients: int = 8,
    paths: list[str] | None = None,
    faults: list[str] | None = None,
    server: str | None = None,
) -> Meta:
    """The configuration and schedule that ``seed`` draws (and the server, unless given), without running anything."""
    rng = random.Random(seed)
    config = draw_config(rng)
    schedule = draw_schedule(rng, deployment, seconds, faults)
    max_history = config["SSE_MAX_HISTORY"]
    return Meta(
        deployment=deployment,
        seed=seed,
        seconds=seconds,
        config=config,
        ids_per_process=deployment == "memory",
        max_history=DEFAULT_MAX_HISTORY if max_history is None else max_history,
        history_ttl=config["SSE_HISTORY_TTL"],
        reset_event="sse-reset",
        schedule=schedule,
        clients=clients,
        paths=paths,
        faults=faults,
        redis_prefix=PREFIX,
        server=server or random.Random(f"{seed}/server").choice(SERVERS),
    )


def run(meta: Meta) -> Outcome:
    """Run what ``meta`` (from ``plan``) describes."""
    with tempfile.TemporaryDirectory(prefix="sse-checker-") as directory:
        running = start(meta.deployment, Path(directory), meta.config, meta.server)
        try:
            return _drive(running, meta)
        finally:
            running.stop()


def _drive(running: Deployment, meta: Meta) -> Outcome:
    wait_loaded(running)  # gunicorn lists its workers before they have loaded the app
    clock = Clock()
    clients, senders = _threads(running, meta, clock)
    nemesis = Nemesis(running, meta.schedule, clients, clock)
    monitor = Monitor(running, clock)
    monitor.sample("run")  # the start of the run, before anything was sent
    for thread in [monitor, *clients, *senders, nemesis]:
        thread.start()
    time.sleep(meta.seconds)  # the run itself
    nemesis.stopping.set()
    nemesis.join()
    for sender in senders:
        sender.stopping.set()
    for sender in senders:
        sender.join()
    outcome = Outcome(History(meta))
    try:
        settled = _settle(running, clock)
        for client in clients:
            client.final.set()
        outcome.history.markers = settled + _final_markers(running, clients, clock)
    except TimeoutError as error:
        outcome.errors.append(f"the deployment did not settle: {error}")
    for client in clients:
        client.stopping.set()
    for client in clients:
        client.join()
    monitor.stopping.set()
    monitor.join()
    monitor.final(meta.redis_prefix)
    _record(outcome, running, clients, senders, nemesis, monitor, clock)
    return outcome


def _record(
    outcome: Outcome,
    running: Deployment,
    clients: list[Client],
    senders: list[Sender],
    nemesis: Nemesis,
    monitor: Monitor,
    clock: Clock,
) -> None:
    history = outcome.history
    history.sends = sorted((s for sender in senders for s in sender.sends), key=lambda s: s.invoke)
    killed_at_graceful_timeout(history.sends, nemesis.faults)
    history.connections = [c for client in clients for c in client.connections] + nemesis.probes
    history.faults = sorted(nemesis.faults, key=lambda fault: fault.start)
    history.endings = nemesis.endings
    history.processes, history.redis = monitor.processes, monitor.redis
    history.hubs = hub_samples(running.directory, clock)
    threads: list[Client | Sender | Nemesis | Monitor] = [*clients, *senders, nemesis, monitor]
    outcome.errors += [f"{t.name}: {t.error!r}" for t in threads if t.error is not None]
    if running.name == "redis" and not any(sample.phase == "final" for sample in history.redis):
        outcome.errors.append("Redis gave no final sample (PUBSUB CHANNELS, CLIENT LIST, keys)")
    outcome.log = running.log()


def _threads(running: Deployment, meta: Meta, clock: Clock) -> tuple[list[Client], list[Sender]]:
    """The clients and senders of a run, each with its own generator drawn from the seed."""
    seed = meta.seed
    rng = random.Random(f"{seed}/channels")
    clients = []
    for n in range(meta.clients):
        channels = rng.sample(CHANNELS, rng.randint(1, 4))
        websocket = meta.server == "websocket" and random.Random(f"{seed}/transport{n}").random() < WEBSOCKET_CLIENTS
        kind = WebSocketClient if websocket else Client
        clients.append(kind(f"client{n}", channels, random.Random(f"{seed}/client{n}"), running.port, clock))
    padding = random.Random(f"{seed}/padding").randint(100, 600)
    senders = []
    for n in range(SENDERS):
        rng = random.Random(f"{seed}/sender{n}")
        senders.append(Sender(f"s{n}", rng, running.port, CHANNELS, clock, TOKEN, padding, INTERVAL, meta.paths))
    return clients, senders


def _settle(running: Deployment, clock: Clock) -> list[Marker]:
    """Until the deployment is whole again and answers a live-only send (recorded as a marker of ``settle``)."""
    running.wait_ready()
    markers: list[Marker] = []

    def answers() -> bool:
        invoke = clock()
        ok = send_once(running.port, "method", "settle", "settle", TOKEN, with_id=False)["outcome"] == OK
        markers.append(Marker("settle", "settle", invoke, clock(), ok))
        return ok

    wait_until(answers, 20, "a live-only send accepted")
    return markers


def _final_markers(running: Deployment, clients: list[Client], clock: Clock) -> list[Marker]:
    used = sorted({channel for client in clients for channel in client.channels})
    markers: list[Marker] = []
    for round in range(MARKER_ROUNDS):
        for channel in used:
            data = f"final-{round}-{channel}"
            invoke = clock()
            sent = send_once(running.port, "method", channel, data, TOKEN, with_id=False)
            markers.append(Marker(channel, data, invoke, clock(), sent["outcome"] == OK))
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if all(client.connected_with_markers(set(client.channels)) for client in clients):
                return markers
            time.sleep(0.01)
    return markers
