"""The one replay decision (flask_sse_stream.replay.plan), case by case, from the facts a backend reports.

Each row: the facts of one read of the store, the id a stream resumes after
(None: a new stream), and what it must get: the reset event first or not,
the ids of the stored events it is sent, and the id up to which live copies
are dropped.
"""

from __future__ import annotations

from typing import Any

import pytest

from flask_sse_stream.event import Event
from flask_sse_stream.replay import StoreFacts, plan


def events(*ids: int) -> list[Event]:
    return [Event(id, None, f"e{id}", None, f"id: {id}\ndata: e{id}\n\n".encode()) for id in ids]


def facts(stored: list[list[int]], last_id: int, gone: list[int | None] | None = None, **more: Any) -> StoreFacts:
    return StoreFacts(last_id, tuple(events(*ids) for ids in stored), tuple(gone or [0] * len(stored)), **more)


ONE = facts([[3, 4, 5]], last_id=5, gone=[2])  # one channel: 1 and 2 left the store
TWO = facts([[2, 4], [3, 5]], last_id=5, gone=[0, 0])  # two channels, ids interleaved

CASES = {
    # name: (facts, after, keeps_history, (reset, ids sent, drop up to))
    "new stream: the whole store": (ONE, None, True, (False, [3, 4, 5], 5)),
    "Last-Event-ID 0: the whole store, no reset": (ONE, 0, True, (False, [3, 4, 5], 5)),
    "exact resume: what it missed": (ONE, 3, True, (False, [4, 5], 5)),
    "resume from the last id: nothing": (ONE, 5, True, (False, [], 5)),
    "an id that left the store: reset, then what is after it": (ONE, 1, True, (True, [3, 4, 5], 5)),
    "the last id that left: nothing missed": (ONE, 2, True, (False, [3, 4, 5], 5)),
    "an id never given (the store restarted): reset and the whole store": (ONE, 9, True, (True, [3, 4, 5], 5)),
    "an id that may have been lost: reset and the whole store": (
        facts([[7, 8]], last_id=8, lost_upto=6),
        4,
        True,
        (True, [7, 8], 8),
    ),
    "above what may have been lost: exact": (facts([[7, 8]], last_id=8, lost_upto=6), 7, True, (False, [8], 8)),
    "an id a restarted Redis forgot: reset and the whole store": (
        facts([[1, 2, 3, 100]], last_id=100, forgotten_range=(3, 99)),
        5,
        True,
        (True, [1, 2, 3, 100], 100),
    ),
    "the counter a restarted Redis came back with: exact": (
        facts([[1, 2, 3, 100]], last_id=100, forgotten_range=(3, 99)),
        3,
        True,
        (False, [100], 100),
    ),
    "a channel whose tombstone expired, resuming from before it": (
        facts([[]], last_id=50, gone=[None], forgotten_below=40),
        30,
        True,
        (True, [], 30),
    ),
    "a channel never used, resuming after the forgotten ids": (
        facts([[]], last_id=50, gone=[None], forgotten_below=40),
        45,
        True,
        (False, [], 45),
    ),
    "several channels: merged in id order": (TWO, 2, True, (False, [3, 4, 5], 5)),
    "several channels, a new stream": (TWO, None, True, (False, [2, 3, 4, 5], 5)),
    "several channels, one evicted past the resume point": (
        facts([[4], [3, 5]], last_id=5, gone=[2, 0]),
        1,
        True,
        (True, [3, 4, 5], 5),
    ),
    "SSE_MAX_HISTORY 0: nothing replayed, no reset, nothing dropped": (ONE, 1, False, (False, [], 0)),
    "SSE_MAX_HISTORY 0, an unknown id: still no reset": (ONE, 9, False, (False, [], 0)),
}


@pytest.mark.parametrize(("store", "after", "keeps_history", "expected"), list(CASES.values()), ids=list(CASES))
def test_the_replay_plan(store: StoreFacts, after: int | None, keeps_history: bool, expected: tuple) -> None:
    got = plan(after, store, keeps_history)
    assert (got.reset, [event.id for event in got.events], got.upto) == expected
