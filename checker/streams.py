"""The rules on what one client saw: order, duplicates and loss, per segment between resets.

A client is a sequence of connections; its view is continuous across its
reconnects and starts again at each reset event (and, when ids are counted
per process, at a connection to another process). A *piece* is the part of
one connection between two resets; a *segment* is a run of pieces.

The loss rule, per piece and per channel ``c`` of the connection: with ``top``
the highest id received in the piece (on any channel: events arrive merged in
id order) or, once the final marker of ``c`` arrived in it, no bound, every
accepted send of ``c`` with an id below ``top``, invoked before ``top`` was
received, must have arrived in the
segment if (a) its id is above the piece's resume point (a connection that
resumed without a reset, with a store), or (b) above the first id received on
``c`` in the piece (each store is a suffix of its channel's events), unless a
fault that loses data came between its send and the piece, or (c) it was
invoked after the piece began (the stream is subscribed before its head is
sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .history import OK, Connection, Received
from .model import INFINITY, Model, Violation, id_list, short


@dataclass
class Piece:
    connection: Connection
    start: float
    #: The resume point it is bound by, None when there is none (fresh, after a reset, no store).
    lower: int | None
    #: The event the client had received with its resume point.
    resumed: Received | None = None
    events: list[Received] = field(default_factory=list)


def segments(connections: list[Connection], model: Model) -> list[list[Piece]]:
    result: list[list[Piece]] = []
    current: list[Piece] = []
    scope: int | None = None
    last: Received | None = None  # the last id'd event: the one the client resumes from
    for connection in connections:
        if connection.opened is None or connection.status != 200:
            continue
        same = scope is None or model.scope(connection.pid) == scope
        if not same and current:
            result.append(current)
            current = []
        scope = model.scope(connection.pid)
        stored = model.meta.max_history != 0
        lower = connection.resume if same and stored else None
        resumed = last if last is not None and last.id == connection.resume else None
        current.append(Piece(connection, connection.opened, lower, resumed))
        for event in connection.events:
            if event.event == model.meta.reset_event:
                result.append(current)
                current = [Piece(connection, event.t, None)]
                continue
            current[-1].events.append(event)
            last = event if event.id is not None else last
    result.append(current)
    return [segment for segment in result if segment]


def order_violations(segment: list[Piece]) -> list[Violation]:
    out: list[Violation] = []
    seen: dict[int, str] = {}
    last: int | None = None
    for piece in segment:
        where = {"client": piece.connection.client, "connection": piece.connection.n}
        for event in piece.events:
            if event.id is None:
                continue
            if event.id in seen:
                first = seen[event.id]
                if first == event.data:
                    why = f"id {event.id} ({short(first)}) received twice with no reset between"
                    out.append(Violation("duplicate", why, ids=(event.id,), data=(first,), **where))
                else:
                    why = f"id {event.id} received again with other data ({short(first)}, then {short(event.data)})"
                    out.append(Violation("id-repeated", why, ids=(event.id,), data=(first, event.data), **where))
            elif last is not None and event.id < last:
                why = f"id {event.id} ({short(event.data)}) arrived after id {last}: ids went backwards"
                out.append(Violation("out-of-order", why, ids=(last, event.id), data=(event.data,), **where))
            seen.setdefault(event.id, event.data)
            last = event.id
    return out


def live_order_violations(connection: Connection, model: Model) -> list[Violation]:
    """A live-only event keeps its place among the id'd ones: none arrives after an id'd event sent after it.

    Judged for live-only events sent once the stream was open (one sent just
    before may reach it after its replay) whose send succeeded (one that timed
    out in a stalled Redis is run when Redis resumes), with each send's own
    call where the app reported it, else its request.
    """
    if connection.opened is None:
        return []
    latest: tuple[float, Received] | None = None  # the id'd event received so far whose send began last
    for event in connection.events:
        send = model.by_data.get(event.data)
        if send is None:
            continue
        if event.id is not None:
            began = send.call_start if send.call_start is not None else send.invoke
            if latest is None or began > latest[0]:
                latest = (began, event)
            continue
        if send.with_id or send.outcome != OK or send.invoke < connection.opened or latest is None:
            continue
        done = send.call_end if send.call_end is not None else send.complete
        if latest[0] > done:
            later = latest[1]
            why = (
                f"live-only {short(event.data)} (sent {send.invoke:.3f}-{done:.3f} s) arrived after id {later.id}"
                f" ({short(later.data)}), whose send began at {latest[0]:.3f} s, after it"
            )
            ids = (later.id,) if later.id is not None else ()
            return [Violation("out-of-order", why, connection.client, connection.n, ids, (event.data, later.data))]
    return []


def loss_violations(segment: list[Piece], model: Model) -> list[Violation]:
    received = {event.data for piece in segment for event in piece.events}
    out: list[Violation] = []
    for piece in segment:
        for channel in piece.connection.channels:
            missing, floor, top = _missing(piece, channel, received, model)
            if missing:
                out.append(_loss(piece, channel, missing, floor, top))
    return out


def _missing(
    piece: Piece, channel: str, received: set[str], model: Model
) -> tuple[list[tuple[int, str]], int | None, float]:
    scope = model.scope(piece.connection.pid)
    top, seen_at, top_sent = _top(piece, channel, model)
    if top is None:
        return [], None, 0
    on_channel = [e.id for e in piece.events if e.id is not None and model.channel_of(e.data) == channel]
    floor = piece.lower if piece.lower is not None else min(on_channel, default=None)
    resumed = model.by_data.get(piece.resumed.data) if piece.resumed is not None else None
    resumed_sent = resumed.invoke if resumed is not None else None
    missing = []
    for send in model.accepted_below(scope, channel, top):
        if send.id is None or send.invoke >= seen_at or send.data in received or (scope, send.id) in model.twice:
            continue
        # Ids compare only between sends that no fault losing data separates (ids may restart there).
        if model.loss_between(send.invoke, top_sent):
            continue
        if piece.lower is not None:
            bound = send.id > piece.lower and not model.loss_between(send.invoke, resumed_sent)
        else:  # a store is a suffix of its channel's events, unless a fault lost some since
            bound = floor is not None and send.id > floor and not model.lost_since(send, piece.start)
        if bound or send.invoke > piece.start:
            missing.append((send.id, send.data))
    return missing, floor, top


def _top(piece: Piece, channel: str, model: Model) -> tuple[float | None, float, float | None]:
    """The bound below which the piece must hold every event of ``channel``, when it was received and sent.

    The final marker of the channel lifts the bound; otherwise it is the highest id received.
    """
    for event in piece.events:
        if model.marker_channel.get(event.data) == channel:
            return INFINITY, event.t, None
    received = [(event.id, event.t, event.data) for event in piece.events if event.id is not None]
    if not received:
        return None, 0.0, None
    id, t, data = max(received)
    send = model.by_data.get(data)
    return id, t, send.invoke if send is not None else None


def _loss(piece: Piece, channel: str, missing: list[tuple[int, str]], floor: int | None, top: float) -> Violation:
    ids = [id for id, _ in missing]
    since = "resume point" if piece.lower is not None else "first id on the channel"
    after = f"after {since} {floor} or " if floor is not None else ""
    until = "before the final marker" if top == INFINITY else f"below id {int(top)} (received)"
    why = (
        f"on channel {channel!r}, {len(ids)} accepted event(s) {after}invoked after the stream opened,"
        f" {until}, never arrived: ids {id_list(ids)}"
    )
    return Violation(
        "loss",
        why,
        piece.connection.client,
        piece.connection.n,
        tuple(ids),
        tuple(data for _, data in missing[:20]),
    )
