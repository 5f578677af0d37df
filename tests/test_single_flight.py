"""Streams that open together share one read of the store; a reader that dies must not strand the others."""

from __future__ import annotations

import time

import gevent
import pytest

from flask_sse_stream.single_flight import SingleFlight


def test_callers_that_arrive_together_share_one_read() -> None:
    batches: SingleFlight[str, int] = SingleFlight()
    reads = []

    def read() -> int:
        reads.append(1)
        return len(reads)

    results = [gevent.spawn(batches.run, "key", read) for _ in range(5)]
    gevent.joinall(results, raise_error=True)
    assert [g.value for g in results] == [1] * 5
    assert reads == [1]


class _KilledWhileYielding:
    """As gevent's module, but its ``sleep`` raises GreenletExit: the caller is killed as it yields."""

    def __getattr__(self, name: str) -> object:
        return getattr(gevent, name)

    @staticmethod
    def sleep(seconds: float = 0) -> None:
        raise gevent.GreenletExit


def test_a_leader_killed_while_it_lets_others_join_leaves_no_batch_open(monkeypatch) -> None:
    import flask_sse_stream.single_flight as module

    batches: SingleFlight[str, str] = SingleFlight()
    with monkeypatch.context() as patch:
        patch.setattr(module, "gevent", _KilledWhileYielding())
        leader = gevent.spawn(batches.run, "key", lambda: "never")
        leader.join()
    assert isinstance(leader.exception, gevent.GreenletExit) or leader.successful()

    started = time.monotonic()
    follower = gevent.spawn(batches.run, "key", lambda: "read")
    follower.join(5)
    assert follower.dead and follower.value == "read", follower.exception
    assert time.monotonic() - started < 1.0


def test_an_error_of_the_read_reaches_every_caller_of_the_batch() -> None:
    batches: SingleFlight[str, str] = SingleFlight()

    def fail() -> str:
        raise ConnectionError("store unreachable")

    callers = [gevent.spawn(batches.run, "key", fail) for _ in range(3)]
    gevent.joinall(callers)
    for caller in callers:
        assert isinstance(caller.exception, ConnectionError)
    with pytest.raises(ConnectionError):
        batches.run("key", fail)
