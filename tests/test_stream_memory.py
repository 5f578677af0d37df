"""What a stream whose client never reads can hold: a bound that does not depend on the client.

A stream's replay, and its live events, go out in pieces of about 64 KiB,
each made when the one before was written, so a client that stops reading
holds one piece and references to its queued events (``SSE_QUEUE_SIZE`` at
most, shared with every other stream); the
replayed events are shared with the store (in-process) or decoded once per
process and shared by the streams of a channel (Redis). Measured with
``tracemalloc`` in this process, which runs the server: 20 more clients that
read nothing but the response head, on a channel with 1,000 stored events
of 2 KB (a 2 MB replay each).
"""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import pytest

from flask_sse_stream.core import core_of
from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

STORED = 1000
SIZE = 2000
CLIENTS = 40
#: What one stream may hold beyond its connection: a piece (64 KiB) and the
#: server's chunk-framed copy of it, a reference per replayed or queued event,
#: and the stream's own objects.
PER_STREAM = 2 * 64 * 1024 + 8 * STORED + 32 * 1024


@pytest.fixture(params=["memory", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "memory":
        yield {}
        return
    server = RedisServer(tmp_path)
    yield {"SSE_REDIS_URL": server.url}
    server.stop()


def test_clients_that_never_read_hold_a_bounded_part_of_their_replay(config, make_app, serve) -> None:
    app, sse = make_app(SSE_MAX_HISTORY=STORED, SSE_KEEPALIVE=60, **config)
    clients: list[StreamClient] = []
    try:
        port = serve(app).port
        for n in range(STORED):
            sse.send_new_event(data=f"{n:05d}" + "x" * (SIZE - 5), id=True, channel="public")
        warm = StreamClient(port, "/stream?channel=public")  # the first reader decodes the store (Redis)
        clients.append(warm)
        assert len(warm.events(STORED, timeout=30)) == STORED
        tracemalloc.start()
        held = []
        for _ in range(2):
            # What the first half of the clients takes includes what a process
            # takes once (Redis connection buffers grown to a store read, say);
            # the second half shows what each stream takes.
            for _ in range(CLIENTS // 2):
                # A tiny receive buffer, and nothing read past the head: the server's
                # write of the first piece blocks as soon as the socket buffers fill.
                client = StreamClient(port, "/stream?channel=public", recv_buffer=4096)
                assert client.status == 200
                clients.append(client)
            held.append(tracemalloc.get_traced_memory()[0])
        assert sse.stats["streams"] == CLIENTS + 1
        grown = (held[1] - held[0]) * 2
    finally:
        tracemalloc.stop()
        for client in clients:
            client.close()
        sse.close()
    replay = STORED * SIZE
    assert grown < CLIENTS * PER_STREAM, (
        f"streams that read nothing hold {grown / CLIENTS / 1024:.0f} KiB each"
        f" (their replay: {replay / 1024:.0f} KiB; the bound: {PER_STREAM / 1024:.0f} KiB)"
    )


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "queued"])
def test_clients_that_never_read_hold_a_piece_of_their_live_events_not_their_queue(make_app, serve, direct) -> None:
    # A burst of 3,000 events of 2 KB (6 MB, more than the kernel buffers a
    # socket: 4 MB at most here), sent in the server's own thread without
    # yielding: every stream's writer finds all of them queued when it wakes.
    app, sse = make_app(SSE_KEEPALIVE=60, SSE_QUEUE_SIZE=5000, SSE_DIRECT_WRITES=direct)
    core = core_of(app)
    clients: list[StreamClient] = []
    readers = 5
    try:
        server = serve(app)
        for _ in range(readers):
            client = StreamClient(server.port, "/stream?channel=live", recv_buffer=4096)
            client.next_chunk()  # the opening
            clients.append(client)
        burst = [f"{n:05d}" + "y" * (SIZE - 5) for n in range(3000)]
        sent = threading.Event()

        def send_burst() -> None:
            for data in burst:
                sse.send_new_event(data=data, channel="live")
            sent.set()

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        server.call_in_hub(send_burst)
        assert sent.wait(30)
        streams = core.fanout.streams()
        wait_until(lambda: all(len(stream.pending) < len(burst) for stream in streams), 10, "every writer to take")
        grown = tracemalloc.get_traced_memory()[1] - before  # the peak: each write's bytes come and go
    finally:
        tracemalloc.stop()
        for client in clients:
            client.close()
        sse.close()
    shared = len(burst) * (SIZE + 200)  # the events themselves, once
    assert grown < shared + readers * PER_STREAM, (
        f"streams that read nothing hold {(grown - shared) / readers / 1024:.0f} KiB each beyond the events"
        f" (the burst: {shared / 1024:.0f} KiB; the bound: {PER_STREAM / 1024:.0f} KiB)"
    )
