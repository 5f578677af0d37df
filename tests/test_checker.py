"""The fault-injecting checker (``checker/``): its rules on small made-up histories, then short real runs.

The made-up histories each hold one deliberate anomaly (a duplicate, a loss,
a reorder, wrong data, an id given twice, an unneeded reset, an ending or an
expiry ignored, a stream ended for nothing, a leak, ...) that the checker must
report, and clean ones, with resets that were needed and ends that had a
cause, that it must not. The short runs start the real deployments (gunicorn
on a private redis-server, and the in-process store on WSGIServer) with fixed
seeds, between them every fault kind the nemesis and the senders draw, and
assert that the checker finds nothing; on failure they print the seed and the
fault schedule that reproduce the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from checker.check import check
from checker.history import (
    Connection,
    Ending,
    Fault,
    History,
    HubSample,
    Marker,
    Meta,
    ProcessSample,
    Received,
    RedisSample,
    Send,
)
from checker.report import fault_counts, reproduce, summary, violations_text
from checker.run import plan, run
from checker.senders import PYWSGI_500, killed_at_graceful_timeout
from checker.wire import StreamReader
from checker.ws_wire import FrameReader


def meta(max_history: int = 1000, ttl: float | None = None, per_process: bool = False, queue: int = 64) -> Meta:
    return Meta("redis", 0, 10.0, {"SSE_QUEUE_SIZE": queue}, per_process, max_history, ttl, "sse-reset")


def send(n: int, id: int | None, t: float, channel: str = "c0", outcome: str = "ok", pid: int = 1) -> Send:
    status = {"ok": 200, "failed": 503}.get(outcome)
    return Send("s0", n, "method", channel, f"s0-{n}", True, t, t + 0.01, outcome, id, pid, status, None, None)


def connection(
    n: int,
    received: list[tuple[int | None, str]],
    start: float,
    resume: int | None = None,
    channels: tuple[str, ...] = ("c0",),
    pid: int = 1,
    ended: str = "client-close",
) -> Connection:
    """A connection of client0 that received ``received`` (``"RESET"`` for a reset), each just after its send."""
    events, t = [], start
    for id, data in received:
        t = max(t, SENT_AT.get(data, 0.0) + 0.05) + 0.001
        name = "sse-reset" if data == "RESET" else "message"
        events.append(Received(round(t, 3), id, name, "" if data == "RESET" else data))
    via = "header" if resume else None
    return Connection(
        "client0", n, list(channels), resume, via, start, "keep", start, 200, pid, t + 0.01, ended, "", events
    )


#: When the made-up sends ``s0-n`` are invoked (``send(n, ...)`` at ``1.0 + n`` s), and the final marker.
SENT_AT = {f"s0-{n}": 1.0 + n for n in range(20)} | {"final-0-c0": 9.0}


def five_sends(channel: str = "c0") -> list[Send]:
    return [send(n, n + 1, 1.0 + n, channel) for n in range(5)]


def ids_data(ids: list[int]) -> list[tuple[int | None, str]]:
    return [(id, f"s0-{id - 1}") for id in ids]


def kinds(history: History) -> list[str]:
    return sorted({violation.kind for violation in check(history)})


# -- each anomaly is reported ---------------------------------------------------------------------------


def test_a_clean_history_has_no_violation() -> None:
    history = History(meta(), five_sends(), [connection(0, ids_data([1, 2, 3, 4, 5]), 0.5)])
    assert check(history) == []


def test_an_event_received_twice_is_a_duplicate() -> None:
    history = History(meta(), five_sends(), [connection(0, ids_data([1, 2, 3, 3, 4, 5]), 0.5)])
    [violation] = check(history)
    assert violation.kind == "duplicate" and violation.ids == (3,) and violation.client == "client0"


def test_an_accepted_event_missing_between_two_received_is_a_loss() -> None:
    history = History(meta(), five_sends(), [connection(0, ids_data([1, 2, 4, 5]), 0.5)])
    [violation] = check(history)
    assert violation.kind == "loss" and violation.ids == (3,) and violation.data == ("s0-2",)


def test_events_out_of_id_order_are_a_reorder() -> None:
    history = History(meta(), five_sends(), [connection(0, ids_data([1, 3, 2, 4, 5]), 0.5)])
    assert kinds(history) == ["out-of-order"]


def test_an_id_with_the_data_of_another_send_is_wrong_data() -> None:
    received = [*ids_data([1, 2]), (3, "s0-3"), *ids_data([5])]
    history = History(meta(), five_sends(), [connection(0, received, 0.5)])
    assert "wrong-id" in kinds(history)


def test_an_id_accepted_for_two_sends_is_given_twice() -> None:
    sends = [*five_sends(), send(5, 3, 6.0)]
    history = History(meta(), sends, [])
    [violation] = check(history)
    assert violation.kind == "id-given-twice" and violation.ids == (3,)
    assert violation.data == ("s0-2", "s0-5")


def test_a_reset_the_store_did_not_need_is_reported() -> None:
    first = connection(0, ids_data([1, 2]), 0.5)
    again = connection(1, [(None, "RESET"), *ids_data([3, 4, 5])], 3.5, resume=2)
    history = History(meta(), five_sends(), [first, again])
    [violation] = check(history)
    assert violation.kind == "unneeded-reset" and violation.connection == 1 and violation.ids == (2,)


def test_a_resume_without_reset_that_skips_stored_events_is_a_loss() -> None:
    first = connection(0, ids_data([1]), 0.5)
    again = connection(1, ids_data([4, 5]), 5.5, resume=1)  # 2 and 3 were still stored: no reset, no replay
    [violation] = check(History(meta(), five_sends(), [first, again]))
    assert violation.kind == "loss" and violation.ids == (2, 3) and violation.connection == 1


def test_an_event_whose_send_failed_must_not_arrive() -> None:
    sends = [*five_sends(), send(5, None, 6.0, outcome="failed")]
    history = History(meta(), sends, [connection(0, [*ids_data([1, 2, 3, 4, 5]), (6, "s0-5")], 0.5)])
    assert kinds(history) == ["failed-send-delivered"]


def test_a_send_killed_by_a_stopping_workers_graceful_timeout_may_have_happened() -> None:
    """pywsgi (GeventWebSocketWorker) answers 500 for a request gunicorn killed at --graceful-timeout."""
    killed, stray = send(5, None, 6.0, outcome="failed"), send(6, None, 8.0, outcome="failed")
    for one in (killed, stray):
        one.status, one.error = 500, PYWSGI_500
    stop = Fault("worker-term", 5.5, 6.5, stopped_pids=[1])
    history = History(meta(), [*five_sends(), killed, stray], [connection(0, [*ids_data([1, 2, 3, 4, 5])], 0.5)])
    history.faults = [stop]
    killed_at_graceful_timeout(history.sends, history.faults)
    assert killed.outcome == "indeterminate" and killed.status is None
    assert kinds(history) == ["send-error"] and stray.status == 500  # a 500 with no stop around it is a finding


def test_a_failed_send_while_the_store_died_may_have_happened() -> None:
    sends = [*five_sends(), send(5, None, 6.0, outcome="failed")]
    crash = Fault("redis-restart-empty", 6.005, 6.5, loses_data=True, kills_store=True)
    history = History(meta(), sends, [connection(0, [*ids_data([1, 2, 3, 4, 5]), (6, "s0-5")], 0.5)], [crash])
    assert check(history) == []


def test_data_nobody_sent_is_reported() -> None:
    history = History(meta(), five_sends(), [connection(0, [*ids_data([1, 2, 3, 4, 5]), (6, "bogus")], 0.5)])
    assert kinds(history) == ["unknown-event"]


def test_a_stream_ended_cleanly_inside_an_event_is_reported_unless_its_process_was_killed() -> None:
    cut = connection(0, ids_data([1, 2, 3, 4, 5]), 0.5, ended="server-end")
    cut.partial = "event: ['id: 6']"
    ended = Ending(0, "c0", None, False, 5.0, 5.01, "ok")  # what ended it: an end_streams of its channel
    assert kinds(History(meta(), five_sends(), [cut], endings=[ended])) == ["cut-inside-event"]
    killed = Fault("worker-kill", 5.0, 5.1, killed_pids=[1])
    assert check(History(meta(), five_sends(), [cut], [killed])) == []


def test_a_client_connected_through_the_final_marker_must_have_every_event_before_it() -> None:
    markers = [Marker("c0", "final-0-c0", 9.0, 9.01, True)]
    late = connection(0, [*ids_data([1, 2, 3]), (None, "final-0-c0")], 0.5, ended="end-of-run")
    [violation] = check(History(meta(), five_sends(), [late], markers=markers))
    assert violation.kind == "loss" and violation.ids == (4, 5)
    silent = connection(0, ids_data([1, 2, 3, 4, 5]), 0.5, ended="end-of-run")
    assert kinds(History(meta(), five_sends(), [silent], markers=markers)) == ["final-marker-missing"]


def test_a_live_only_event_arriving_after_an_id_sent_after_it_is_a_reorder() -> None:
    live = Send("s0", 9, "seq", "c0", "live-9", False, 2.0, 2.5, "ok", None, 1, 200, call_start=2.1, call_end=2.2)
    later = send(5, 6, 2.3)  # invoked after the live-only one's call returned
    sends = [*five_sends()[:2], live, later]
    stream = connection(0, [(1, "s0-0"), (2, "s0-1"), (6, "s0-5"), (None, "live-9")], 0.5)
    [violation] = check(History(meta(), sends, [stream]))
    assert violation.kind == "out-of-order" and violation.data == ("live-9", "s0-5")
    in_order = connection(0, [(1, "s0-0"), (2, "s0-1"), (None, "live-9"), (6, "s0-5")], 0.5)
    assert check(History(meta(), sends, [in_order])) == []
    # A send that failed in a stalled Redis, which ran it when it resumed: it has no place to keep.
    live.outcome, live.status = "failed", 503
    stalled = Fault("redis-stall", 1.9, 2.6, hits_redis=True, stalls_store=True)
    assert check(History(meta(), sends, [stream], [stalled])) == []


# -- why streams end, and why they are refused ---------------------------------------------------------------


def authorized(n: int, start: float, end: float, ended: str = "server-end", **admission: object) -> Connection:
    """A stream of c0 for subject "u" authorized from ``start`` (opened 10 ms later) that ended at ``end``."""
    stream = Connection("client0", n, ["c0"], None, None, start, "keep", start + 0.01, 200, 1, end, ended)
    stream.subject, stream.auth_start = "u", start
    for name, value in admission.items():
        setattr(stream, name, value)
    return stream


def ending(invoke: float, subject: str | None = "u", revoke: bool = False, outcome: str = "ok") -> Ending:
    return Ending(0, None, subject, revoke, invoke, invoke + 0.01, outcome, revoked=revoke)


def test_a_stream_an_ending_matched_must_end_within_a_second() -> None:
    ignored = authorized(0, 1.0, 4.0, ended="client-close")
    [violation] = check(History(meta(), connections=[ignored], endings=[ending(2.0)]))
    assert violation.kind == "ending-ignored" and "ending 0" in violation.explanation
    assert check(History(meta(), connections=[authorized(0, 1.0, 2.3)], endings=[ending(2.0)])) == []
    other = ending(2.0, subject="someone-else")
    assert kinds(History(meta(), connections=[ignored], endings=[other])) == []


def test_a_stream_being_authorized_when_an_ending_came_must_end_as_it_opens() -> None:
    slow = authorized(0, 1.9, 6.0, ended="client-close")
    slow.opened = 2.4  # its authorizer took 0.5 s; the ending came meanwhile
    assert kinds(History(meta(), connections=[slow], endings=[ending(2.0)])) == ["ending-ignored"]
    slow.end = 3.3
    assert check(History(meta(), connections=[slow], endings=[ending(2.0)])) == []
    after = authorized(0, 2.1, 6.0, ended="client-close")  # authorized after the ending: not ended by it
    assert check(History(meta(), connections=[after], endings=[ending(2.0)])) == []


def test_an_ending_after_a_redis_fault_may_reach_other_processes_when_they_resubscribe() -> None:
    late = authorized(0, 1.0, 5.5, ended="server-end")
    outage = Fault("redis-kill-pubsub", 1.5, 1.6, hits_redis=True)
    assert check(History(meta(), connections=[late], faults=[outage], endings=[ending(2.0)])) == []
    much_later = authorized(0, 1.0, 9.0, ended="client-close")
    assert kinds(History(meta(), connections=[much_later], faults=[outage], endings=[ending(2.0)])) == [
        "ending-ignored"
    ]


def test_a_client_that_did_not_read_may_notice_an_end_late() -> None:
    late = authorized(0, 1.0, 4.0, ended="server-end", gaps=[[2.5, 3.9]])
    assert check(History(meta(), connections=[late], endings=[ending(2.0)])) == []


def test_a_stream_must_end_within_a_second_of_its_expiry() -> None:
    kept = authorized(0, 1.0, 5.0, ended="client-close", expires=3.0)
    [violation] = check(History(meta(), connections=[kept]))
    assert violation.kind == "expiry-ignored"
    assert check(History(meta(), connections=[authorized(0, 1.0, 3.01, expires=3.0)])) == []


def test_a_revoked_subject_is_refused_and_only_then_may_be() -> None:
    again = authorized(1, 3.0, 4.0, ended="client-close")
    [violation] = check(History(meta(), connections=[again], endings=[ending(2.0, revoke=True)]))
    assert violation.kind == "revoked-admitted"
    refused = authorized(1, 3.0, 3.02)
    refused.status, refused.error = 403, "channel 'c0' is not open to this request"
    assert check(History(meta(), connections=[refused], endings=[ending(2.0, revoke=True)])) == []
    assert kinds(History(meta(), connections=[refused])) == ["stream-error"]
    expired = authorized(1, 3.0, 3.02, expires=2.9)
    expired.status = 403
    assert check(History(meta(), connections=[expired])) == []


def test_a_stream_the_server_ends_needs_a_cause() -> None:
    cut = authorized(0, 1.0, 3.0)
    [violation] = check(History(meta(), connections=[cut]))
    assert violation.kind == "end-without-cause" and violation.client == "client0"
    causes: list[dict[str, object]] = [
        {"endings": [ending(2.9, outcome="failed")]},  # an end_streams that failed still ends its own process's
        {"faults": [Fault("worker-term", 2.5, 2.9, stopped_pids=[1])]},
        {"faults": [Fault("worker-kill", 2.5, 2.9, killed_pids=[1])]},
        {"faults": [Fault("redis-stall", 0.5, 1.0, hits_redis=True, stalls_store=True)]},
    ]
    for cause in causes:
        assert check(History(meta(), connections=[cut], **cause)) == [], cause  # type: ignore[arg-type]
    assert check(History(meta(), connections=[authorized(0, 1.0, 3.0, expires=2.99)])) == []
    assert check(History(meta(), connections=[authorized(0, 1.0, 3.0, gaps=[[2.0, 2.8]])])) == []
    assert check(History(meta(), connections=[authorized(0, 1.0, 3.0, ended="client-rst")])) == []
    burst = [send(n, n + 1, 2.9, "c0") for n in range(5)]  # more than SSE_QUEUE_SIZE at once
    assert check(History(meta(queue=4), burst, [authorized(0, 1.0, 3.0)])) == []
    far = Fault("redis-restart-empty", 0.1, 0.2, hits_redis=True)
    assert kinds(History(meta(), connections=[authorized(0, 9.0, 9.5)], faults=[far])) == ["end-without-cause"]


def test_a_redis_fault_ends_only_the_streams_that_open_during_it_unless_nothing_is_stored() -> None:
    # Open through the loss: told in-band, not ended. Opened during it: hung up, rightly.
    loss = Fault("redis-restart-empty", 2.0, 2.5, loses_data=True, kills_store=True, hits_redis=True)
    through = authorized(0, 1.0, 3.0)
    assert kinds(History(meta(), connections=[through], faults=[loss])) == ["end-without-cause"]
    assert check(History(meta(max_history=0), connections=[through], faults=[loss])) == []
    assert check(History(meta(), connections=[authorized(0, 2.2, 2.3)], faults=[loss])) == []


def test_an_in_band_reset_needs_a_redis_fault_just_before() -> None:
    received = [*ids_data([1, 2]), (None, "RESET"), *ids_data([1, 2, 3, 4, 5])]
    told = connection(0, received, 0.5)
    loss = Fault("redis-restart-empty", 1.9, 2.0, loses_data=True, kills_store=True, hits_redis=True)
    assert check(History(meta(), five_sends(), [told], [loss])) == []
    assert kinds(History(meta(), five_sends(), [told])) == ["unneeded-reset"]


# -- resources against the start of the run -----------------------------------------------------------------


def process(t: float, fds: int, phase: str = "run", redis: int = 2, clients: int = 0, pid: int = 1) -> ProcessSample:
    return ProcessSample(t, pid, phase, fds, 2, redis, redis, clients, [40000 + n for n in range(redis)])


def leaks(history: History) -> list[str]:
    return [v.explanation for v in check(history) if v.kind == "resource-leak"]


def test_file_descriptors_and_hubs_must_come_back_to_the_start() -> None:
    hubs = [HubSample(0.5, 1, "run", 1), HubSample(9.0, 1, "final", 1)]
    # 30 fds at the end, 20 of them sockets to Redis and clients: 10, as at the start.
    fine = [process(1.0, 10, redis=2), process(5.0, 60, redis=8, clients=40), process(9.0, 30, "final", 8, 12)]
    assert leaks(History(meta(), processes=fine, hubs=hubs)) == []
    grown = [process(1.0, 10), process(9.0, 300, "final")]
    [fds] = leaks(History(meta(), processes=grown, hubs=hubs))
    assert "process 1 held 300 file descriptors" in fds
    more_hubs = [HubSample(0.5, 1, "run", 1), HubSample(9.0, 1, "final", 40)]
    [hubs_leak] = leaks(History(meta(), processes=fine, hubs=more_hubs))
    assert "40 gevent hubs" in hubs_leak


def test_a_process_holds_one_subscription_and_the_pools_connections() -> None:
    def redis(t: float, pubsub: list[list[int | None]], phase: str = "run") -> RedisSample:
        return RedisSample(t, phase, ["{sse}:control"], pubsub, [1], [] if phase == "final" else None)

    brief = [redis(1.0, [[1, 1], [2, 1]]), redis(1.5, [[2, 1]]), redis(9.0, [[2, 1]], "final")]
    assert leaks(History(meta(), redis=brief)) == []
    kept = [redis(1.0, [[1, 1], [2, 1]]), redis(2.0, [[1, 1], [2, 1]]), redis(9.0, [[1, 1], [2, 1]], "final")]
    assert len(leaks(History(meta(), redis=kept))) == 2  # during the run, and at the end
    orphan = [redis(9.0, [[3, None]], "final")]
    assert "no live process holds" in leaks(History(meta(), redis=orphan))[0]
    assert leaks(History(meta(), processes=[process(2.0, 20, redis=9), process(3.5, 20, redis=8)])) == []
    [pool] = leaks(History(meta(), processes=[process(2.0, 20, redis=9), process(3.5, 20, redis=9)]))
    assert "9 connections to Redis" in pool


def test_at_the_end_redis_holds_no_subscription_of_a_channel_and_only_keys_of_known_kinds() -> None:
    sent = [send(0, 1, 1.0, "c0")]
    keys = ["{sse}:id", "{sse}:run", "{sse}:store:c0", "{sse}:marks:c0", "{sse}:counts", "{sse}:counts:vm:1:ab"]
    final = RedisSample(9.0, "final", ["{sse}:control"], [], [1], keys)
    hubs = [HubSample(0.5, 1, "run", 1)]
    assert leaks(History(meta(), sent, redis=[final], hubs=hubs)) == []
    held = RedisSample(9.0, "final", ["{sse}:control", "{sse}:c:c3"], [], [1], keys)
    assert "channels c3" in leaks(History(meta(), sent, redis=[held], hubs=hubs))[0]
    stray = RedisSample(9.0, "final", [], [], [1], [*keys, "{sse}:store:c9", "{sse}:junk", "{sse}:counts:vm:7:cd"])
    found = " / ".join(leaks(History(meta(), sent, redis=[stray], hubs=hubs)))
    assert "{sse}:junk" in found and "{sse}:store:c9" in found and "count keys" in found


# -- needed resets and allowed gaps are not reported -------------------------------------------------------


def test_a_reset_after_the_resume_point_was_evicted_is_justified() -> None:
    first = connection(0, ids_data([1]), 0.5)
    again = connection(1, [(None, "RESET"), *ids_data([4, 5])], 5.5, resume=1)  # 2 and 3 evicted
    assert check(History(meta(max_history=2), five_sends(), [first, again])) == []


def test_a_reset_after_timed_out_items_of_the_resume_points_own_burst_filled_the_store_is_justified() -> None:
    # A burst's items share one invoke time; those that timed out may have been stored after the resume point.
    burst = [send(n, n + 1 if n in (0, 4) else None, 1.0, outcome="ok" if n in (0, 4) else "indeterminate")
             for n in range(5)]  # fmt: skip
    first = connection(0, ids_data([1]), 0.5)
    again = connection(1, [(None, "RESET"), (5, "s0-4")], 5.5, resume=1)
    assert check(History(meta(max_history=3), burst, [first, again])) == []


def test_a_reset_after_the_resume_point_expired_is_justified() -> None:
    first = connection(0, ids_data([1]), 0.5)
    again = connection(1, [(None, "RESET"), *ids_data([4, 5])], 5.5, resume=1)
    assert check(History(meta(ttl=2.0), five_sends(), [first, again])) == []


def test_a_reset_after_a_fault_lost_data_is_justified() -> None:
    first = connection(0, ids_data([1, 2]), 0.5)
    again = connection(1, [(None, "RESET"), *ids_data([4, 5])], 5.5, resume=2)
    loss = Fault("redis-restart-empty", 3.5, 3.8, loses_data=True, kills_store=True)
    assert check(History(meta(), five_sends(), [first, again], [loss])) == []


def test_a_reset_after_a_restarted_process_never_gave_the_id_is_justified() -> None:
    old = [send(n, n + 1, 1.0 + n, pid=1) for n in range(5)]
    new = [send(5 + n, n + 1, 6.0 + n, pid=2) for n in range(2)]
    first = connection(0, ids_data([1, 2, 3, 4, 5]), 0.5, pid=1)
    again = connection(1, [(None, "RESET"), (1, "s0-5"), (2, "s0-6")], 5.8, resume=5, pid=2)
    restart = Fault("server-term", 5.5, 5.7, loses_data=True, kills_store=True)
    assert check(History(meta(per_process=True), old + new, [first, again], [restart])) == []


def test_nothing_stored_means_no_replay_and_no_reset() -> None:
    first = connection(0, ids_data([1]), 0.5)
    again = connection(1, ids_data([5]), 4.5, resume=1)  # 2-4 were sent while away: gone, rightly
    assert check(History(meta(max_history=0), five_sends(), [first, again])) == []
    reset = connection(1, [(None, "RESET"), *ids_data([5])], 4.5, resume=1)
    assert kinds(History(meta(max_history=0), five_sends(), [first, reset])) == ["unneeded-reset"]


def test_after_a_reset_each_channel_may_start_at_its_own_store() -> None:
    sends = [send(n, n + 1, 1.0 + n, "c0" if n % 2 else "c1") for n in range(8)]
    first = connection(0, [(1, "s0-0")], 0.5, channels=("c0", "c1"))
    # c1 kept ids 5 and 7, c0 only 8: after the reset nothing before each store's start is owed.
    again = connection(1, [(None, "RESET"), (5, "s0-4"), (7, "s0-6"), (8, "s0-7")], 9.5, 1, ("c0", "c1"))
    assert check(History(meta(max_history=2), sends, [first, again])) == []


def test_a_history_kept_as_json_lines_checks_the_same(tmp_path: Path) -> None:
    history = History(meta(), five_sends(), [connection(0, ids_data([1, 2, 4, 5]), 0.5)], [Fault("redis-del-id", 1, 1)])
    history.endings = [ending(2.0, revoke=True)]
    history.processes, history.hubs = [process(1.0, 10), process(9.0, 50, "final")], [HubSample(0.5, 1, "run", 1)]
    history.redis = [RedisSample(9.0, "final", ["{sse}:c:c0"], [[4, 1]], [1], ["{sse}:id"])]
    history.dump(tmp_path / "history.jsonl")
    again = History.load(tmp_path / "history.jsonl")
    assert again == history and check(again) == check(history)


def test_the_reader_tells_a_clean_end_from_one_inside_an_event() -> None:
    reader = StreamReader()
    events = reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n: hello\n\n\r\n")
    events += reader.feed(b"10\r\nid: 7\ndata: x\r\n\n\r\n0\r\n\r\n")
    assert [(e.id, e.data) for e in events] == [(7, "x")] and reader.finished and reader.partial() == ""
    cut = StreamReader()
    cut.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nid: 7\ndata:")
    assert cut.partial() != ""


def server_frame(opcode: int, payload: bytes) -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload


def test_the_websocket_reader_takes_the_app_frame_as_the_head_and_a_refusal_close_as_its_status() -> None:
    reader = FrameReader()
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    assert reader.feed(upgrade) == [] and not reader.has_head
    head = server_frame(0x1, b'{"x-worker": 41, "x-auth-start": "12.5"}')
    events = reader.feed(head + server_frame(0x1, b'{"id": "7", "data": "a\\nb"}') + server_frame(0x9, b"")[:1])
    assert reader.status == 200 and reader.headers["x-worker"] == "41" and reader.headers["x-auth-start"] == "12.5"
    assert [(e.id, e.event, e.data) for e in events] == [(7, "message", "a\nb")] and reader.partial() != ""
    events = reader.feed(server_frame(0x9, b"")[1:] + server_frame(0x1, b'{"retry": 900}'))
    assert events == [] and reader.partial() == "" and len(reader.replies) == 1  # the ping's pong
    reader.feed(server_frame(0x8, (4403).to_bytes(2, "big") + b"refused"))
    assert reader.finished and reader.status == 403 and b"4403 refused" in reader.body
    planned = FrameReader()
    planned.feed(upgrade + head + server_frame(0x8, (1012).to_bytes(2, "big")))
    assert planned.finished and planned.status == 200 and planned.close_code == 1012


# -- short runs against the real deployments ---------------------------------------------------------------

#: (deployment, seed, seconds, fault kinds it is narrowed to (None: all), what it must have done: the kinds
#: of its first steps, which no slow fault before them can push past the end of the run, the server: under
#: "websocket", gevent-websocket's handler, and about half the clients read over a WebSocket). Between them
#: every fault kind the nemesis and the senders draw; the second stalls Redis past the library's 5 s
#: command timeout (runs of 8 s or more draw such stalls), in per-channel mode.
SHORT_RUNS = [
    ("redis", 11, 6.0, None, {"end-cold", "end-channel"}, "websocket"),
    ("redis", 12, 8.0, ["redis-stall", "redis-pause", "end-channel", "end-subject"],
     {"redis-pause", "redis-stall", "end-channel", "end-subject", "revocation"}, "gevent"),
    ("redis", 14, 6.0, ["end-cold", "end-subject", "end-channel"], {"end-cold", "end-subject"}, "gevent"),
    ("memory", 21, 6.0, None, {"end-cold", "end-subject"}, "websocket"),
    ("memory", 22, 6.0, None, {"client-stall", "end-subject"}, "gevent"),
]  # fmt: skip
#: What every run does: the application's faults, drawn by the senders and the clients. In-process sends
#: never yield to the hub, so a deadline or a kill fires inside a send only with Redis.
EVERY_RUN = {"send-threads", "send-pool", "send-seq", "send-burst", "expiry"}
WITH_REDIS = {"send-timeout", "send-kill"}


@pytest.mark.parametrize(("deployment", "seed", "seconds", "faults", "done", "server"), SHORT_RUNS)
def test_short_run_finds_no_violation(
    deployment: str, seed: int, seconds: float, faults: list[str] | None, done: set[str], server: str
) -> None:
    outcome = run(plan(deployment, seed, seconds, faults=faults, server=server))
    violations = check(outcome.history)
    report = f"{summary(outcome.history)}\n{violations_text(violations)}\n{reproduce(outcome.history)}"
    assert not outcome.errors, f"the harness failed: {outcome.errors}\n{report}"
    assert not violations, report
    survived = {kind.split(" (")[0] for kind in fault_counts(outcome.history)}  # "end-subject (cold)": end-subject
    due = done | EVERY_RUN | (WITH_REDIS if deployment == "redis" else set())
    assert due <= survived, f"the run did not do {sorted(due - survived)}\n{report}"
    assert any(sample.phase == "final" for sample in outcome.history.processes), "no final resource sample"
    if server == "websocket":  # WebSocket clients beside SSE clients, each with events
        read = {c.transport for c in outcome.history.connections if c.status == 200 and c.events}
        assert read == {"sse", "websocket"}, f"streams with events, by transport: {read}\n{report}"
