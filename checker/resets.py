"""The reset rule: a reset event must be needed, and look like one.

A reset received at time ``t`` on a connection that resumed from ``r`` is
justified when (a) ``r`` is above every id accepted before the connection
started (an id the server never gave), or (b) an accepted event of one of the
connection's channels with an id above ``r`` may have left the store: at least
SSE_MAX_HISTORY of them were invoked before ``t`` (counting the sends without
an accepted id that may have happened and were still running when the send
that got ``r`` was invoked: the items of its own burst), or, with
SSE_HISTORY_TTL, one was invoked more than TTL - 0.5 s before ``t``; or (c) a
fault that loses data was not over yet when the send that got ``r`` was
invoked, and began before ``t``; or (d) no accepted send got ``r``. A reset on
an open stream (after other events on it: told in-band) is justified by a
Redis fault within the library's recovery time before it. With
SSE_MAX_HISTORY = 0 no reset is ever due, and a connection that sent no resume point never needs one.
"""

from __future__ import annotations

from .causes import REDIS_RECOVERY
from .history import Connection, Received, Send
from .model import Model, Violation

#: Seconds of slack on the TTL: the store's clock and ours differ, and expiry is not instantaneous.
TTL_SLACK = 0.5


def reset_violations(connection: Connection, model: Model) -> list[Violation]:
    out = []
    name = model.meta.reset_event
    for event in connection.events:
        if event.event != name:
            continue
        where = {"client": connection.client, "connection": connection.n}
        if event.id is not None:
            why = f"the reset event carries id {event.id}: a reset has no id line"
            out.append(Violation("reset-with-id", why, ids=(event.id,), **where))
        why = _unjustified(connection, event, model)
        if why is not None:
            ids = () if connection.resume is None else (connection.resume,)
            out.append(Violation("unneeded-reset", why, ids=ids, **where))
    return out


def _unjustified(connection: Connection, reset: Received, model: Model) -> str | None:
    """Why the reset was not needed, or None if it may have been."""
    resume = connection.resume
    if model.meta.max_history == 0:
        return f"a reset at {reset.t:.3f} s although SSE_MAX_HISTORY is 0 (nothing is stored, no reset is due)"
    if connection.events and connection.events[0] is not reset:
        return _in_band(reset, model)
    if resume is None:
        return f"a reset at {reset.t:.3f} s on a connection that sent no resume point"
    scope = model.scope(connection.pid)
    # The send that got ``resume`` was invoked before the client received it (ids may be given twice).
    given = [s for s in model.by_id.get((scope, resume), []) if s.invoke < connection.start]
    if not given:
        return None  # (d)
    if not any(
        s.id is not None and s.id >= resume and s.complete < connection.start
        for s in model.accepted
        if model.scope(s.pid) == scope
    ):
        return None  # (a)
    sent = min(given, key=lambda s: s.invoke)
    if any(f.loses_data and f.end >= sent.invoke and f.start <= reset.t for f in model.history.faults):
        return None  # (c)
    for channel in connection.channels:
        if _may_have_left(model, scope, channel, sent, reset.t):
            return None  # (b)
    return (
        f"reset at {reset.t:.3f} s when resuming from {resume} (sent at {sent.invoke:.3f} s), though the store"
        f" could hold every later event of {', '.join(connection.channels)} and no fault lost data:"
        " reset where the stream could have been served exactly"
    )


def _in_band(reset: Received, model: Model) -> str | None:
    """A reset on an open stream, after what it had received: due only while its process recovers from a
    Redis fault (it may have missed events, or Redis lost data)."""
    if any(f.hits_redis and f.start <= reset.t <= f.end + REDIS_RECOVERY for f in model.history.faults):
        return None
    return (
        f"a reset at {reset.t:.3f} s on an open stream, with no Redis fault in the {REDIS_RECOVERY:g} s before:"
        " an in-band reset comes only from a recovery"
    )


def _may_have_left(model: Model, scope: int, channel: str, sent: Send, t: float) -> bool:
    assert sent.id is not None
    later = [s for s in model.accepted_above(scope, channel, sent.id) if s.invoke < t]
    # With it or after it: the items of its own batch (a burst, a pool) that timed out were stored after it.
    later += [s for s in model.maybe_after(scope, channel, sent.invoke) if s.invoke < t]
    if len(later) >= model.meta.max_history:
        return True
    ttl = model.meta.history_ttl
    return ttl is not None and any(s.invoke < t - (ttl - TTL_SLACK) for s in later)
