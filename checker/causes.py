"""The rules on why streams end and why they are refused, judged against the endings, expiries and faults recorded.

- ``ending-ignored``: a stream that an accepted ending matched (its channel,
  its subject), whose authorization began before the ending was invoked,
  ends within ``ENDING_GRACE`` of the ending's answer (or of its own opening,
  if later: "it ends too, as it opens"; or of the resubscription after a
  Redis fault meanwhile, when the ending reaches other processes by catch-up);
- ``expiry-ignored``: a stream admitted until ``expires`` ends within
  ``EXPIRY_GRACE`` of it;
- ``revoked-admitted``: a stream of a subject whose revocation was written
  before its authorization began is refused;
- ``stream-error``: a stream request is answered 200, or 403 where its
  subject had been revoked or its admission had expired;
- ``end-without-cause``: a stream the server ended (or whose connection
  broke) has a cause in the history: an ending that matched it, its expiry,
  a stop of its process, a Redis fault within ``REDIS_RECOVERY`` before that
  it opened during (a stream open before a Redis fault is told in-band and
  stays open; without a store, any Redis fault), a stall of its client (a
  span in which it did not read), or a burst of more events of its channels
  than SSE_QUEUE_SIZE just before.

A deadline is not judged where the client did not read for a while after
it (it notices an end only when it reads).
"""

from __future__ import annotations

from .history import FAILED, OK, Connection, Ending, Fault, History
from .model import Violation

#: Seconds within which a stream an ending matched must end: issue 21 (docs/security.rst: "well under a second").
ENDING_GRACE = 1.0
#: Seconds within which a stream must end after its expiry: issue 21 (docs/security.rst: "within a few ms").
EXPIRY_GRACE = 1.0
#: Seconds a stream may end before its expiry: the app turns the host's monotonic time into Unix time, and
#: the library back (microseconds apart).
EXPIRY_EARLY = 0.05
#: The library's recovery after a Redis fault (docs/guarantees.rst, "Redis faults"): its subscription retries
#: after a back-off growing to 2 s, and a call to a Redis that does not answer gives up after the command
#: timeout (5 s, flask_sse_stream/backends/redis_connection.py), so streams may end, and streams that open
#: are hung up, until back-off + timeout after the fault; 1 s more for a loaded machine.
RESUBSCRIBE_BACKOFF = 2.0
COMMAND_TIMEOUT = 5.0
REDIS_RECOVERY = RESUBSCRIBE_BACKOFF + COMMAND_TIMEOUT + 1.0
#: Seconds after a Redis fault within which every process has subscribed again (and caught up with the
#: endings it missed): the back-off, once Redis answers again, and 1 s for the attempt on a loaded machine.
RESUBSCRIBED = RESUBSCRIBE_BACKOFF + 1.0
#: Seconds before a stream's end in which more than SSE_QUEUE_SIZE events of its channels explain it: the
#: library counts the events not yet written to a stream, and its writes go out on the loop's next turn,
#: so a burst sent within one turn (or while a loaded worker does not run the stream) drops even a client
#: that reads (flask_sse_stream/stream.py, ``Stream.push``; reported: the docs name only slow readers).
BURST_WINDOW = 0.25
#: SSE_QUEUE_SIZE when the run's configuration does not set it (docs/config.rst).
DEFAULT_QUEUE_SIZE = 1024
#: Ends the client made itself (or the run did): they need no cause.
CLIENT_ENDS = ("client-close", "client-rst", "end-of-run", "stalled")


def matches(ending: Ending, connection: Connection) -> bool:
    channel_ok = ending.channel is None or ending.channel in connection.channels
    return channel_ok and (ending.subject is None or ending.subject == connection.subject)


def admitted(connection: Connection) -> bool:
    return connection.opened is not None and connection.status == 200


def cause_violations(history: History) -> list[Violation]:
    out: list[Violation] = []
    for connection in history.connections:
        out += ending_ignored(connection, history)
        out += expiry_ignored(connection)
        out += revoked_admitted(connection, history.endings)
        out += refusal_violations(connection, history.endings)
        out += end_without_cause(connection, history)
    return out


def ending_ignored(connection: Connection, history: History) -> list[Violation]:
    started = connection.auth_start
    if not admitted(connection) or started is None or connection.end is None:
        return []
    for ending in history.endings:
        if ending.outcome != OK or not matches(ending, connection) or started >= ending.invoke:
            continue
        if connection.end < ending.invoke:
            continue  # it had ended already
        deadline = max(ending.complete, connection.opened or 0.0) + ENDING_GRACE
        deadline = _after_redis_faults(history.faults, ending.invoke, deadline)
        if connection.end > deadline and not _unread(connection, ending.invoke):
            why = (
                f"ending {ending.n} ({_which(ending)}, answered at {ending.complete:.3f} s) matched it, authorized"
                f" from {started:.3f} s on worker {connection.pid}, but it was still open {connection.end:.3f} s"
                f" ({connection.ended}), past {deadline:.3f} s"
            )
            return [Violation("ending-ignored", why, connection.client, connection.n)]
    return []


def _after_redis_faults(faults: list[Fault], start: float, deadline: float) -> float:
    """``deadline``, pushed past the recovery of any Redis fault that was not over by ``start``.

    A process whose subscription is down meanwhile gets the ending when it subscribes again.
    """
    for fault in sorted(faults, key=lambda f: f.start):
        if fault.hits_redis and fault.start <= deadline and fault.end + RESUBSCRIBED >= start:
            deadline = max(deadline, fault.end + RESUBSCRIBED + ENDING_GRACE)
    return deadline


def _unread(connection: Connection, since: float) -> bool:
    """The client did not read for a while after ``since``: it may have noticed the end late."""
    return any(end >= since for _, end in connection.gaps)


def _which(ending: Ending) -> str:
    parts = [f"channel {ending.channel}"] if ending.channel is not None else []
    return " and ".join(parts + ([f"subject {ending.subject}"] if ending.subject is not None else []))


def expiry_ignored(connection: Connection) -> list[Violation]:
    expires = connection.expires
    if not admitted(connection) or expires is None or connection.end is None:
        return []
    deadline = max(expires, connection.opened or 0.0) + EXPIRY_GRACE
    if connection.end <= deadline or _unread(connection, expires):
        return []
    why = (
        f"admitted until {expires:.3f} s, on worker {connection.pid}, it was still open at {connection.end:.3f} s"
        f" ({connection.ended}), past {deadline:.3f} s"
    )
    return [Violation("expiry-ignored", why, connection.client, connection.n)]


def revoked_admitted(connection: Connection, endings: list[Ending]) -> list[Violation]:
    started = connection.auth_start
    if not admitted(connection) or started is None or connection.subject is None:
        return []
    for ending in endings:
        if ending.revoked and ending.subject == connection.subject and ending.complete < started:
            why = (
                f"subject {connection.subject} was revoked (ending {ending.n}, answered at {ending.complete:.3f} s),"
                f" yet its stream authorized from {started:.3f} s was admitted on worker {connection.pid}"
            )
            return [Violation("revoked-admitted", why, connection.client, connection.n)]
    return []


def refusal_violations(connection: Connection, endings: list[Ending]) -> list[Violation]:
    """A stream request is answered 200, or 403 where its subject was revoked or its admission had expired."""
    if connection.opened is None or connection.status == 200:
        return []
    if connection.status == 403 and _may_refuse(connection, endings):
        return []
    text = " ".join(connection.error.split())[:160]
    why = f"the stream request was answered {connection.status}: {text!r}"
    return [Violation("stream-error", why, connection.client, connection.n)]


def _may_refuse(connection: Connection, endings: list[Ending]) -> bool:
    answered = connection.opened or 0.0
    if connection.expires is not None and connection.expires <= answered + EXPIRY_EARLY:
        return True
    subject = connection.subject
    return subject is not None and any(e.revoke and e.subject == subject and e.invoke <= answered for e in endings)


def _burst(connection: Connection, history: History, end: float) -> bool:
    """More events of its channels than SSE_QUEUE_SIZE were sent in the ``BURST_WINDOW`` before ``end``."""
    size = history.meta.config.get("SSE_QUEUE_SIZE") or DEFAULT_QUEUE_SIZE
    channels = set(connection.channels)
    sent = sum(
        1
        for send in history.sends
        if send.channel in channels
        and send.outcome != FAILED
        and send.invoke <= end
        and send.complete >= end - BURST_WINDOW
    )
    return sent > size


def _ended_by(fault: Fault, connection: Connection, history: History) -> bool:
    """Whether a Redis fault may end this stream: one that opened while Redis was disturbed (it is hung up),
    or any, without a store. A stream open before the fault outlives it: the library recovers, and tells
    the streams that may have missed something in-band (the reset event, then the store), without ending
    them (docs/guarantees.rst, "Redis faults")."""
    return history.meta.max_history == 0 or (connection.opened or 0.0) >= fault.start


def end_without_cause(connection: Connection, history: History) -> list[Violation]:
    if not admitted(connection) or connection.end is None or connection.ended in CLIENT_ENDS:
        return []
    end = connection.end
    if connection.gaps and connection.gaps[0][0] <= end:
        return []  # it stalled: a slow client is cut
    if _burst(connection, history, end):
        return []
    if connection.expires is not None and end >= connection.expires - EXPIRY_EARLY:
        return []
    if any(e.invoke <= end and connection.start <= e.complete + ENDING_GRACE and matches(e, connection)
           for e in history.endings):  # fmt: skip
        return []
    for fault in history.faults:
        if fault.start <= end and connection.pid in fault.killed_pids + fault.stopped_pids:
            return []
        if (
            fault.hits_redis
            and fault.start <= end <= fault.end + REDIS_RECOVERY
            and _ended_by(fault, connection, history)
        ):
            return []
    why = (
        f"the server ended it ({connection.ended}) at {end:.3f} s, open since {connection.opened:.3f} s on worker"
        f" {connection.pid}, with no cause in the history: no ending or expiry matched it, its process was not"
        f" stopped, no Redis fault it opened during came in the {REDIS_RECOVERY:g} s before (one it was open"
        f" through must not end it), and its client did not stall"
    )
    return [Violation("end-without-cause", why, connection.client, connection.n)]
