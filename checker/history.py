"""The record of a run: what was sent, what each client saw, which faults happened, and when.

Times are seconds since the start of the run, on the host's monotonic clock
(``CLOCK_MONOTONIC`` is one clock for every process of a Linux host, so the
times the app under test reports, such as when it began authorizing a
stream, are on it too: see :class:`Clock`). A history is written as JSON
lines, one record per line with a ``"type"``, so that a failing run can be
kept and checked again (``python -m checker --recheck FILE``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The outcomes of a send: it happened (with its id), it did not, or nobody knows.
OK, FAILED, INDETERMINATE = "ok", "failed", "indeterminate"


class Clock:
    """Seconds since the start of the run; ``of(raw)`` turns a ``time.monotonic()`` of any process into them."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def of(self, raw: float) -> float:
        return round(raw - self.t0, 4)


@dataclass
class Send:
    sender: str
    n: int
    via: str
    channel: str
    data: str
    with_id: bool
    invoke: float
    complete: float
    outcome: str
    id: int | None = None
    pid: int | None = None
    #: The HTTP status of the answer (None without one: refused, timed out, broken).
    status: int | None = None
    error: str | None = None
    traceback: str | None = None
    #: The request that made it, when one request made several sends (threads, a pool, a sequence).
    request: str | None = None
    #: When the app called the library and when the call returned (None: only the request's bounds are known).
    call_start: float | None = None
    call_end: float | None = None


@dataclass
class Received:
    t: float
    #: The integer of the event's own ``id:`` line; None without one.
    id: int | None
    event: str
    data: str


@dataclass
class Connection:
    client: str
    n: int
    channels: list[str]
    #: The resume point sent (``Last-Event-ID`` header or ``lastEventId`` query), None for none.
    resume: int | None
    resume_via: str | None
    start: float
    #: What the client drew to do on it: keep, close, rst, stall or pause (see ``clients``).
    behaviour: str = ""
    #: When the response head was read (the stream is subscribed by then); None if it never was.
    opened: float | None = None
    status: int = 0
    pid: int | None = None
    end: float | None = None
    #: How it ended: "server-end" (end of body or FIN), "network: ..." (an error), "client-close",
    #: "client-rst", "stalled" (closed after a stall), "end-of-run", "refused: ...".
    ended: str = ""
    #: What was left of an unfinished chunk, line or event when the server ended it ("" on a boundary).
    partial: str = ""
    events: list[Received] = field(default_factory=list)
    #: The start of the body of an answer other than 200.
    error: str = ""
    #: The admission the client asked for: its subject, its expiry (None: none) and how long the
    #: app's authorizer takes (it reads the revocations first, then waits, as a slow lookup would).
    subject: str | None = None
    expires: float | None = None
    delay: float = 0.0
    #: When the app's authorizer was first called for it (its ``X-Auth-Start`` header).
    auth_start: float | None = None
    #: Spans of at least ``clients.GAP`` seconds in which the client did not read the socket.
    gaps: list[list[float]] = field(default_factory=list)
    #: "sse", or "websocket" (``checker.ws_clients``).
    transport: str = "sse"


@dataclass
class Fault:
    kind: str
    start: float
    end: float
    detail: str = ""
    #: The store lost events or its id counter (a reset may then be needed).
    loses_data: bool = False
    #: The process holding the store died during it: a send in flight may or may not have happened.
    kills_store: bool = False
    #: Processes killed with SIGKILL: their streams may end anywhere.
    killed_pids: list[int] = field(default_factory=list)
    #: Processes told to stop (SIGTERM): their streams end, and streams opening there are hung up.
    stopped_pids: list[int] = field(default_factory=list)
    #: Redis was down, stalled, paused, lost data or dropped subscriptions: streams may end meanwhile
    #: and for the library's documented recovery time after it (``causes.REDIS_RECOVERY``).
    hits_redis: bool = False
    #: Redis stalled or paused: a send that timed out meanwhile may still be done when Redis resumes.
    stalls_store: bool = False


@dataclass
class Ending:
    """A call of ``end_streams`` made through the app (``POST /checker/end``)."""

    n: int
    channel: str | None
    subject: str | None
    #: The subject was added to the app's revocations first (its authorizer refuses it from then on).
    revoke: bool
    invoke: float
    complete: float
    outcome: str
    #: What it was aimed at: "authorizing" (a client's stream being authorized), "cold" (probes
    #: on a worker that has just started), "random".
    aim: str = "random"
    status: int | None = None
    pid: int | None = None
    error: str | None = None
    #: The app said the revocation was written (it is, before ``end_streams`` is called).
    revoked: bool = False


@dataclass
class ProcessSample:
    """A process of the app seen from outside (``/proc``): its file descriptors, threads and sockets."""

    t: float
    pid: int
    #: "run", or "final" once the clients have left and the deployment has settled.
    phase: str
    fds: int
    threads: int
    #: Sockets to Redis (any state) and those of them established; sockets on the app's port.
    redis: int
    redis_established: int
    clients: int
    #: The local ports of its sockets to Redis (to tell whose a Redis client is).
    redis_ports: list[int] = field(default_factory=list)
    #: Socket fds in no socket table: TCP sockets whose peer has gone (RST, or FIN both ways) that the
    #: process has not closed yet (a stream that has not noticed its client left, say).
    unlisted: int = 0


@dataclass
class HubSample:
    """A process of the app seen from inside: the gevent hubs it holds (``gc`` over ``gevent.hub.Hub``)."""

    t: float
    pid: int
    phase: str
    hubs: int


@dataclass
class RedisSample:
    """Redis seen by the checker: the app's pub/sub channels and subscription connections, and its keys."""

    t: float
    phase: str
    #: ``PUBSUB CHANNELS``.
    channels: list[str]
    #: ``CLIENT LIST TYPE pubsub``: [port, pid of the worker whose socket it is, or None].
    pubsub: list[list[int | None]]
    #: The live workers then.
    workers: list[int]
    #: Every key (at the final sample only).
    keys: list[str] | None = None


@dataclass
class Marker:
    """A final live-only event, sent once every send has completed."""

    channel: str
    data: str
    invoke: float
    complete: float
    ok: bool


@dataclass
class Meta:
    deployment: str
    seed: int
    seconds: float
    #: The SSE_* configuration of the deployment.
    config: dict[str, Any]
    #: Ids are counted per server process (in-process store) rather than by the deployment (Redis).
    ids_per_process: bool
    #: SSE_MAX_HISTORY in force (the library's default when not configured).
    max_history: int
    history_ttl: float | None
    reset_event: str
    schedule: list[dict[str, Any]] = field(default_factory=list)
    clients: int = 8
    #: The sender paths and fault kinds the run was narrowed to (None: all).
    paths: list[str] | None = None
    faults: list[str] | None = None
    redis_prefix: str = "sse"
    #: "gevent" (gevent's own handler) or "websocket" (gevent-websocket's: some clients over WebSocket).
    server: str = "gevent"


@dataclass
class History:
    meta: Meta
    sends: list[Send] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    endings: list[Ending] = field(default_factory=list)
    processes: list[ProcessSample] = field(default_factory=list)
    hubs: list[HubSample] = field(default_factory=list)
    redis: list[RedisSample] = field(default_factory=list)

    def dump(self, path: Path) -> None:
        with path.open("w") as out:
            for kind, record in self.records():
                out.write(json.dumps({"type": kind, **asdict(record)}) + "\n")

    def records(self) -> list[tuple[str, Any]]:
        return [
            ("meta", self.meta),
            *(("send", send) for send in self.sends),
            *(("connection", connection) for connection in self.connections),
            *(("fault", fault) for fault in self.faults),
            *(("marker", marker) for marker in self.markers),
            *(("ending", ending) for ending in self.endings),
            *(("process", sample) for sample in self.processes),
            *(("hubs", sample) for sample in self.hubs),
            *(("redis", sample) for sample in self.redis),
        ]

    @classmethod
    def load(cls, path: Path) -> History:
        meta: Meta | None = None
        history = cls(meta=None)  # type: ignore[arg-type]
        simple: dict[str, tuple[Any, list[Any]]] = {
            "send": (Send, history.sends),
            "fault": (Fault, history.faults),
            "marker": (Marker, history.markers),
            "ending": (Ending, history.endings),
            "process": (ProcessSample, history.processes),
            "hubs": (HubSample, history.hubs),
            "redis": (RedisSample, history.redis),
        }
        for number, line in enumerate(path.read_text().splitlines(), 1):
            record = json.loads(line)
            kind = record.pop("type")
            if kind == "meta":
                meta = Meta(**record)
            elif kind == "connection":
                events = [Received(**event) for event in record.pop("events")]
                history.connections.append(Connection(**record, events=events))
            elif kind in simple:
                make, into = simple[kind]
                into.append(make(**record))
            else:
                raise ValueError(f"{path}:{number}: unknown record type {kind!r}")
        if meta is None:
            raise ValueError(f"{path}: no meta record")
        history.meta = meta
        return history
