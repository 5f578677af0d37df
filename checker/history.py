"""The record of a run: what was sent, what each client saw, which faults happened, and when.

Times are seconds since the start of the run, on the checker process's
monotonic clock (every record is made in that one process). A history is
written as JSON lines, one record per line with a ``"type"``, so that a failing
run can be kept and checked again (``python -m checker --recheck FILE``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The outcomes of a send: it happened (with its id), it did not, or nobody knows.
OK, FAILED, INDETERMINATE = "ok", "failed", "indeterminate"


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


@dataclass
class History:
    meta: Meta
    sends: list[Send] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)

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
        ]

    @classmethod
    def load(cls, path: Path) -> History:
        meta: Meta | None = None
        history = cls(meta=None)  # type: ignore[arg-type]
        for number, line in enumerate(path.read_text().splitlines(), 1):
            record = json.loads(line)
            kind = record.pop("type")
            if kind == "meta":
                meta = Meta(**record)
            elif kind == "send":
                history.sends.append(Send(**record))
            elif kind == "connection":
                events = [Received(**event) for event in record.pop("events")]
                history.connections.append(Connection(**record, events=events))
            elif kind == "fault":
                history.faults.append(Fault(**record))
            elif kind == "marker":
                history.markers.append(Marker(**record))
            else:
                raise ValueError(f"{path}:{number}: unknown record type {kind!r}")
        if meta is None:
            raise ValueError(f"{path}: no meta record")
        history.meta = meta
        return history
