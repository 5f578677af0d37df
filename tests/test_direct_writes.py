"""Direct writes: under gevent, events sent in the stream's own thread go straight to its socket.

The server here is gevent's WSGIServer in a thread with its own hub; events are
sent from that hub (``call_in_hub``), as a request handler or the Redis
listener of a gevent worker would send them. Every test also runs with
``SSE_DIRECT_WRITES = False``: what a client gets must not depend on it.
"""

from __future__ import annotations

import threading

import pytest

from tests.support.waiting import wait_until


@pytest.fixture(params=[True, False], ids=["direct", "queued"])
def direct(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def send_in_hub(server, sse, events: list[dict]) -> None:
    """Send ``events`` from the server's hub thread, in one go, and wait until that is done."""
    done = threading.Event()

    def send() -> None:
        try:
            for kwargs in events:
                sse.send_new_event(**kwargs)
        finally:
            done.set()

    server.call_in_hub(send)
    assert done.wait(30), "the hub did not run the sends"


def test_events_sent_in_the_hub_arrive_whole_and_in_order(make_app, serve, client_for, direct) -> None:
    app, sse = make_app(SSE_DIRECT_WRITES=direct, SSE_QUEUE_SIZE=100_000)
    server = serve(app)
    # A small receive buffer (but a client that reads): big events do not fit
    # the socket at once, so part of a chunk is left to the stream's writer.
    clients = [client_for(server.port, recv_buffer=4096), client_for(server.port)]
    for client in clients:
        client.next_chunk()
    sizes = [10, 100_000, 1, 70_000, 5, 300_000, 3] * 3
    for round_ in range(3):
        send_in_hub(server, sse, [{"data": f"{round_}:{i}:" + "x" * size, "id": True} for i, size in enumerate(sizes)])
    for client in clients:
        got = client.events(len(sizes) * 3, timeout=30)
        assert [m.data for m in got] == [f"{r}:{i}:" + "x" * size for r in range(3) for i, size in enumerate(sizes)], (
            "an event came back cut or out of order"
        )
        assert [m.id for m in got] == list(range(1, len(sizes) * 3 + 1))


def test_a_burst_sent_without_yielding_goes_out_in_one_write(make_app, serve, client_for, direct) -> None:
    app, sse = make_app(SSE_DIRECT_WRITES=direct)
    server = serve(app)
    client = client_for(server.port)
    client.next_chunk()
    send_in_hub(server, sse, [{"data": f"burst {i}"} for i in range(5)])
    assert client.next_chunk() == b"".join(b"data: burst %d\n\n" % i for i in range(5))


def test_keep_alives_come_only_when_no_event_was_written(make_app, serve, client_for, direct) -> None:
    keepalive = 0.3
    app, sse = make_app(SSE_DIRECT_WRITES=direct, SSE_KEEPALIVE=keepalive)
    server = serve(app)
    client = client_for(server.port)
    client.next_chunk()
    # Idle: a keep-alive comes within one keep-alive period (and a bit).
    assert client.next_chunk(timeout=keepalive * 3).startswith(b": ")
    # Events more often than the keep-alive period: no keep-alive between them.
    chunks = []
    for i in range(8):
        send_in_hub(server, sse, [{"data": f"tick {i}"}])
        chunks.append(client.next_chunk(timeout=keepalive * 3))
        threading.Event().wait(keepalive / 3)  # the pace of the events is what this test is about
    assert chunks == [b"data: tick %d\n\n" % i for i in range(8)], chunks


def test_a_client_that_stops_reading_is_dropped_and_the_others_get_everything(
    make_app, serve, client_for, direct
) -> None:
    app, sse = make_app(SSE_DIRECT_WRITES=direct, SSE_QUEUE_SIZE=8)
    server = serve(app)
    stuck = client_for(server.port, recv_buffer=4096)
    stuck.next_chunk()
    reader = client_for(server.port)
    reader.next_chunk()
    stuck_connection = sse.connections[0]  # listed in the order they opened
    payload = "y" * 8000
    received = []
    for n in range(400):
        send_in_hub(server, sse, [{"data": f"{n} {payload}", "id": True}])
        received.append(reader.next_event(timeout=10).data)
        if stuck_connection not in sse.connections:
            break
    else:
        pytest.fail("the client that stopped reading was never dropped")
    assert received == [f"{n} {payload}" for n in range(len(received))]
    wait_until(lambda: len(sse.connections) == 1, what="only the reading client to remain")


def test_senders_in_several_threads_keep_id_order(make_app, serve, client_for, direct) -> None:
    app, sse = make_app(SSE_DIRECT_WRITES=direct, SSE_QUEUE_SIZE=100_000)
    server = serve(app)
    client = client_for(server.port)
    client.next_chunk()

    def from_this_thread() -> None:
        for i in range(300):
            sse.send_new_event(data=f"thread {i}", id=True)

    thread = threading.Thread(target=from_this_thread)
    thread.start()
    for i in range(30):
        send_in_hub(server, sse, [{"data": f"hub {i}.{k}", "id": True} for k in range(10)])
    thread.join(30)
    ids = [m.id for m in client.events(600, timeout=30)]
    assert ids == list(range(1, 601))
