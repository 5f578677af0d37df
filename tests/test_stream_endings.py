"""However a stream ends, it ends on an event boundary, and soon.

Under gunicorn's gevent worker, events are written straight to the sockets of
idle streams; a socket that does not take a whole write leaves the rest to the
stream's own greenlet. Ending the stream (SIGTERM, stop()) must never cut that
write short with the end of the response: the body either ends after whole
events, or the connection is cut (which a browser treats as a network error,
not as the end of an event). And a stream whose client stopped reading must
not hold a worker that is told to stop.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.chunked import dechunk, read_to_the_end
from tests.support.client import StreamClient
from tests.support.gunicorn import GRACEFUL_TIMEOUT, OneWorker
from tests.support.waiting import wait_until

OPENING = b": flask_sse_stream\n\n"


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[OneWorker]:
    running = OneWorker(tmp_path / "gunicorn.log")
    yield running
    running.stop()


def frame(id: int, data: str) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (id, data.encode())


def split_retry(body: bytes) -> tuple[bytes, int | None]:
    """The body without the ``retry:`` block a planned end writes last (SSE_RECONNECT_SPREAD), and its value."""
    match = re.search(rb"retry: (\d+)\n\n\Z", body)
    return (body[: match.start()], int(match[1])) if match else (body, None)


def not_reading(port: int) -> StreamClient:
    """A stream whose client reads its opening and then nothing, with a small receive buffer."""
    client = StreamClient(port, "/stream", recv_buffer=4096)
    assert client.status == 200
    assert client.next_chunk() == OPENING
    return client


def test_sigterm_right_after_a_partial_direct_write_ends_the_stream_after_the_whole_event(gunicorn) -> None:
    client = not_reading(gunicorn.port)
    big = "x" * 4_000_000  # far more than the socket buffers take at once
    worker, _ = gunicorn.publish(data=big, id="1", then="sigterm")

    body, ended = dechunk(read_to_the_end(client.sock, client._raw))
    client.close()
    body, retry = split_retry(body)
    assert frame(1, big).startswith(body), f"the body is not whole events: ...{body[-80:]!r}{gunicorn.why()}"
    assert ended and body == frame(1, big), f"{len(body)} of {len(frame(1, big))} bytes{gunicorn.why()}"
    assert retry is not None and 0 <= retry <= 5000, "a planned end spreads its client's reconnection"
    wait_until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE)


def test_every_stream_of_a_busy_worker_told_to_stop_gets_its_retry(tmp_path: Path) -> None:
    # Each stream's end costs the worker 5 ms (a slow log handler): ending 300 takes it 1.5 s, longer than
    # the grace a stream has to finish its write. None of them is stuck in a write: none may be cut.
    running = OneWorker(tmp_path / "gunicorn.log", SSE_RECONNECT_SPREAD="5", SLOW_LOG_MS="5")
    try:
        clients = [StreamClient(running.port, "/stream") for _ in range(300)]
        for client in clients:
            assert client.next_chunk() == OPENING
        os.kill(running.worker(), signal.SIGTERM)
        retries = []
        for client in clients:
            body, ended = dechunk(read_to_the_end(client.sock, client._raw))
            client.close()
            retries.append(split_retry(body)[1] if ended else None)
        told = [retry for retry in retries if retry is not None]
        assert len(told) == len(clients), f"{len(clients) - len(told)} of {len(clients)} streams were cut"
        assert all(0 <= retry <= 5000 for retry in told)
    finally:
        running.stop()


def test_sigterm_ends_a_stream_whose_client_stopped_reading_within_a_second(gunicorn) -> None:
    client = not_reading(gunicorn.port)
    worker = gunicorn.worker()
    for _n in range(3):
        gunicorn.publish(data="y" * 4_000_000, id="1", channel="sse")  # the stream's writer blocks
    started = time.monotonic()
    os.kill(worker, signal.SIGTERM)
    psutil.Process(worker).wait(GRACEFUL_TIMEOUT)
    exited = time.monotonic() - started
    # The client reads only now: what it gets must still be whole events, or cut off.
    body, ended = dechunk(read_to_the_end(client.sock, client._raw))
    client.close()
    assert exited < 2.0, f"the worker took {exited:.1f} s to exit after SIGTERM{gunicorn.why()}"
    frames = [frame(n, "y" * 4_000_000) for n in (1, 2, 3)]
    assert b"".join(frames).startswith(body), f"the body is not whole events: ...{body[-80:]!r}"
    if ended:  # a clean end comes after whole events only
        assert body in [b"".join(frames[:n]) for n in range(4)], f"it ended after {len(body)} bytes"
