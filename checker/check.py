"""``check(history) -> list[Violation]``: the rules, applied to a recorded history after the run.

It knows nothing of how the library works: only what was sent (and what
came of each send), what each client received, and which faults happened
when. See ``streams`` (order, duplicates, loss), ``resets`` (unneeded resets),
``causes`` (endings, expiries, revocations, refusals: why streams end),
``resources`` (what the app holds at the end, against its start) and below
(what was received is explainable, ids are given once, sends do not fail
unexpectedly, streams end on an event boundary, the final marker).
"""

from __future__ import annotations

from collections import defaultdict

from .causes import cause_violations
from .history import Connection, History
from .model import Model, Violation, short
from .resets import reset_violations
from .resources import resource_violations
from .streams import live_order_violations, loss_violations, order_violations, segments

#: A clean end by the server (the last chunk, or a FIN). An RST (a "network" end) is not judged: TCP
#: discards what was in flight, so the client cannot tell where the server's writes ended.
CLEAN_END = "server-end"


def check(history: History) -> list[Violation]:
    model = Model(history)
    out = send_violations(model) + ids_given_twice(model)
    clients: dict[str, list[Connection]] = defaultdict(list)
    for connection in sorted(history.connections, key=lambda c: (c.client, c.n)):
        clients[connection.client].append(connection)
    for connections in clients.values():
        for connection in connections:
            out += event_violations(connection, model)
            out += reset_violations(connection, model)
            out += boundary_violations(connection, model)
            out += live_order_violations(connection, model)
        for segment in segments(connections, model):
            out += order_violations(segment)
            out += loss_violations(segment, model)
        out += marker_violations(connections, model)
    return out + cause_violations(history) + resource_violations(history)


def send_violations(model: Model) -> list[Violation]:
    """A send answered with anything but its id or 503 (the store unreachable) is a finding."""
    out = []
    for send in model.history.sends:
        if send.status is not None and send.status not in (200, 503):
            detail = (send.traceback or send.error or "").strip().splitlines()
            why = f"{send.via} send of {short(send.data)} answered {send.status}: {detail[-1] if detail else '?'}"
            out.append(Violation("send-error", why, data=(send.data,)))
    return out


def ids_given_twice(model: Model) -> list[Violation]:
    """An id given to two sends: accepted both, or seen in the streams with two sends' data."""
    given: dict[tuple[int, int], set[str]] = defaultdict(set)
    for key, sends in model.by_id.items():
        given[key].update(send.data for send in sends)
    for connection in model.history.connections:
        scope = model.scope(connection.pid)
        for event in connection.events:
            send = model.by_data.get(event.data)
            if event.id is not None and send is not None and send.outcome != "ok" and send.with_id:
                given[scope, event.id].add(event.data)
    out = []
    for (scope, id), data in sorted(given.items()):
        if len(data) > 1:
            model.twice.add((scope, id))
            shown = ", ".join(short(d) for d in sorted(data))
            out.append(
                Violation(
                    "id-given-twice",
                    f"id {id} was given to {len(data)} sends: {shown}",
                    ids=(id,),
                    data=tuple(sorted(data)),
                )
            )
    return out


def event_violations(connection: Connection, model: Model) -> list[Violation]:
    """Every event received is explained by a send that may have happened, with its id."""
    out = []
    scope = model.scope(connection.pid)
    where = {"client": connection.client, "connection": connection.n}
    for event in connection.events:
        if event.event == model.meta.reset_event:
            continue
        if event.data in model.marker_channel and event.id is None:
            continue
        send = model.by_data.get(event.data)
        why = None
        kind = "wrong-id"
        if event.event != "message":
            kind, why = "unknown-event", f"an event named {event.event!r} ({short(event.data)}) that nobody sent"
        elif send is None:
            kind, why = "unknown-event", f"id {event.id}: data {short(event.data)} that nobody sent"
        elif not model.may_have_happened(send):
            kind, why = (
                "failed-send-delivered",
                (f"id {event.id}: {short(event.data)}, whose send failed ({send.error}) at {send.complete:.3f} s"),
            )
        elif send.with_id != (event.id is not None):
            why = f"{short(event.data)} was sent with id={send.with_id} but arrived with id {event.id}"
        elif send.outcome == "ok" and (send.id != event.id or model.scope(send.pid) != scope):
            why = f"{short(event.data)} got id {send.id} from its send but arrived with id {event.id}"
        if why is not None:
            ids = tuple(i for i in (event.id, send.id if send else None) if i is not None)
            out.append(Violation(kind, why, ids=ids, data=(event.data,), **where))
    return out


def boundary_violations(connection: Connection, model: Model) -> list[Violation]:
    """A stream the server ended cleanly ends on an event boundary, unless its process was SIGKILLed."""
    if not connection.partial or connection.ended != CLEAN_END:
        return []
    end = connection.end if connection.end is not None else float("inf")
    for fault in model.history.faults:
        if connection.pid in fault.killed_pids and fault.start <= end:
            return []
    why = f"the stream ended ({connection.ended}) inside an event or a chunk: {connection.partial[:80]!r}"
    return [Violation("cut-inside-event", why, connection.client, connection.n)]


def marker_violations(connections: list[Connection], model: Model) -> list[Violation]:
    """A client connected through the final markers receives one on each of its channels."""
    if not model.history.markers or not connections:
        return []
    last = connections[-1]
    last_round = max(marker.invoke for marker in model.history.markers)
    if last.opened is None or last.opened >= last_round or last.ended != "end-of-run":
        return []
    got = {model.marker_channel[e.data] for e in last.events if e.data in model.marker_channel}
    missing = [channel for channel in last.channels if channel not in got]
    if not missing:
        return []
    why = f"open through the final markers, it received none on {', '.join(missing)}"
    return [Violation("final-marker-missing", why, last.client, last.n)]
