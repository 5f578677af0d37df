"""Every stream feature over HTTP/2 served by gunicorn itself, over TLS and over h2c.

The server is ``gunicorn -k flask_sse_stream.gunicorn_http2.GeventWorker
--http-protocols h2,h1`` with a certificate the test makes (or
``--http2-cleartext both``), serving ``tests/apps/h2.py``. The clients are
``h2`` itself (``tests/support/h2.py``: many streams on one connection) and
``httpx`` over HTTP/2, which know nothing of the library.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hyperframe.frame import DataFrame, Frame

from flask_sse_stream.stream_request import multiplexed, socket_of
from tests.support.h2 import H2Client, H2Server, H2Stream, wait_all
from tests.support.waiting import wait_until

CONFIG = {"SSE_KEEPALIVE": 0.5}


@pytest.fixture(scope="module", params=["tls", "h2c"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Server]:
    running = H2Server(tmp_path_factory.mktemp(request.param), request.param == "tls", CONFIG)
    yield running
    running.stop()


@pytest.fixture
def client(server: H2Server) -> Iterator[H2Client]:
    connection = H2Client(server.port, server.tls)
    yield connection
    connection.close()


def channel() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


def opened(stream: H2Stream) -> H2Stream:
    stream.wait(lambda s: s.status is not None and s.comments, 10, "open")
    return stream


def test_stream_replays_then_goes_live_with_the_stream_headers(server: H2Server, client: H2Client) -> None:
    name = channel()
    ids = [server.post("/publish", data=f"stored {i}", id="1", channel=name)["id"] for i in range(3)]
    stream = opened(client.open(f"/stream?channel={name}"))
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert stream.headers["cache-control"] == "no-cache"
    assert "connection" not in stream.headers and "transfer-encoding" not in stream.headers
    assert stream.wait_events(3) == ["stored 0", "stored 1", "stored 2"]
    server.post("/publish", data="live", channel=name)
    assert stream.wait_events(4) == ["stored 0", "stored 1", "stored 2", "live"]
    assert [int(event["id"]) for event in stream.events[:3]] == ids


def test_last_event_id_header_and_query_resume_after_that_id(server: H2Server, client: H2Client) -> None:
    name = channel()
    ids = [server.post("/publish", data=f"e{i}", id="1", channel=name)["id"] for i in range(3)]
    by_header = client.open(f"/stream?channel={name}", {"Last-Event-ID": str(ids[1])})
    by_query = client.open(f"/stream?channel={name}&lastEventId={ids[0]}")
    assert opened(by_header).wait_events(1) == ["e2"]
    assert opened(by_query).wait_events(2) == ["e1", "e2"]
    server.post("/publish", data="after", channel=name)
    assert by_header.wait_events(2) == ["e2", "after"]


def test_several_channels_arrive_merged_in_id_order(server: H2Server, client: H2Client) -> None:
    one, two = channel(), channel()
    stream = opened(client.open(f"/stream?channel={one}&channel={two}"))
    for name, data in ((one, "a"), (two, "b"), (one, "c")):
        server.post("/publish", data=data, id="1", channel=name)
    assert stream.wait_events(3) == ["a", "b", "c"]
    ids = [int(event["id"]) for event in stream.events]
    assert ids == sorted(ids)


def test_authorize_refuses_and_end_streams_ends_one_channel_on_an_event_boundary(
    server: H2Server, client: H2Client
) -> None:
    refused = client.open("/stream?channel=secret")
    refused.wait_ended()
    assert refused.status == 403 and refused.ended == "END_STREAM"
    ended, kept = channel(), channel()
    gone = opened(client.open(f"/stream?channel={ended}"))
    stays = opened(client.open(f"/stream?channel={kept}"))
    server.post("/burst", n="20", channel=ended, size="200")
    server.post("/end", channel=ended)
    assert gone.wait_ended() == "END_STREAM"
    assert gone.body.endswith(b"\n\n")
    server.post("/publish", data="still here", channel=kept)
    assert stays.wait_events(1) == ["still here"] and stays.ended is None


def test_keepalive_comments_flow_on_an_idle_stream(client: H2Client) -> None:
    stream = opened(client.open(f"/stream?channel={channel()}"))
    stream.wait(lambda s: s.comments.count("keep-alive") >= 2, 5, "two keep-alive comments")


def test_counts_and_stats_follow_the_streams_of_one_connection(server: H2Server) -> None:
    # The connections of the tests before have closed: their streams end.
    wait_until(lambda: server.info()["streams"] == 0, 5, "no stream open")
    before = server.info()
    connection = H2Client(server.port, server.tls)
    try:
        streams = [opened(connection.open(f"/stream?channel={channel()}")) for _ in range(5)]
        during = server.info()
        assert during["streams"] == during["count"] == 5
        assert during["stats"]["streams_opened"] == before["stats"]["streams_opened"] + 5
    finally:
        connection.close()
    wait_until(lambda: server.info()["streams"] == 0, 5, "the streams closed with their connection")
    assert all(stream.ended is not None for stream in streams)


def metric(server: H2Server, name: str) -> float:
    for line in server.http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_prometheus_metrics_follow_the_http2_streams(server: H2Server, client: H2Client) -> None:
    opened_before = metric(server, "flask_sse_stream_streams_opened_total")
    sent_before = metric(server, "flask_sse_stream_events_sent_total")
    name = channel()
    streams = [opened(client.open(f"/stream?channel={name}")) for _ in range(3)]
    server.post("/publish", data="counted", channel=name)
    wait_all(streams, 1)
    assert metric(server, "flask_sse_stream_streams_opened_total") == opened_before + 3
    assert metric(server, "flask_sse_stream_events_sent_total") == sent_before + 1


def test_health_probes_answer_over_http2(server: H2Server) -> None:
    for path in ("/stream/health/live", "/stream/health/ready"):
        response = server.http.get(path)
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200, response.text


def test_httpx_reads_the_stream_over_http2(server: H2Server) -> None:
    name = channel()
    sent = server.post("/publish", data="for httpx", id="1", channel=name)["id"]
    with server.client() as http, http.stream("GET", f"/stream?channel={name}") as response:
        assert response.http_version == "HTTP/2"
        lines = response.iter_lines()
        received = [next(lines) for _ in range(5)]
        assert received == [": flask_sse_stream", "", f"id: {sent}", "data: for httpx", ""]


def test_the_bytes_on_the_wire_are_http2_frames_only(tmp_path: Path) -> None:
    # h2c: a plain gevent socket, where direct writes would be possible.
    server = H2Server(tmp_path, tls=False, config=CONFIG)
    try:
        connection = H2Client(server.port, tls=False, record=True)
        name = channel()
        streams = [opened(connection.open(f"/stream?channel={name}")) for _ in range(3)]
        server.post("/publish", data="one", id="1", channel=name)
        server.post("/burst", n="50", channel=name, size="100")
        wait_all(streams, 51)
        connection.close()
        wire = bytes(connection.wire)
        payloads: dict[int, bytes] = {}
        at = 0
        while at < len(wire):
            frame, length = Frame.parse_frame_header(memoryview(wire[at : at + 9]))
            frame.parse_body(memoryview(wire[at + 9 : at + 9 + length]))
            at += 9 + length
            if isinstance(frame, DataFrame):
                payloads[frame.stream_id] = payloads.get(frame.stream_id, b"") + frame.data
        assert at == len(wire)
        for stream in streams:
            assert payloads[stream.stream_id] == bytes(stream.body)
            assert b"\r\n" not in stream.body  # no chunked encoding
    finally:
        server.stop()


def test_sigterm_ends_every_stream_of_a_connection_on_an_event_boundary(tmp_path: Path) -> None:
    server = H2Server(tmp_path, tls=True, config=CONFIG)
    try:
        connection = H2Client(server.port, tls=True)
        name = channel()
        streams = [opened(connection.open(f"/stream?channel={name}")) for _ in range(10)]
        server.post("/burst", n="200", channel=name, size="500")
        worker = server.worker()
        os.kill(worker, signal.SIGTERM)
        started = time.monotonic()
        for stream in streams:
            assert stream.wait_ended(5) in ("END_STREAM", "RST_STREAM 0", "RST_STREAM 8")
            assert stream.body.endswith(b"\n\n"), bytes(stream.body[-80:])
        assert time.monotonic() - started < 1.5
        wait_until(lambda: connection.goaway is not None, 5, "GOAWAY")
        connection.close()
    finally:
        server.stop()


def test_the_same_worker_serves_a_stream_over_http11_too(server: H2Server) -> None:
    name = channel()
    server.post("/publish", data="over http/1.1", channel=name, id="1")
    with httpx.Client(base_url=server.url, http1=True, http2=False, verify=False, timeout=30) as http:
        with http.stream("GET", f"/stream?channel={name}") as response:
            assert response.http_version == "HTTP/1.1"
            lines = response.iter_lines()
            assert "data: over http/1.1" in [next(lines) for _ in range(5)]


def test_an_http11_request_upgraded_to_h2c_is_the_first_stream(tmp_path: Path) -> None:
    server = H2Server(tmp_path, tls=False, config=CONFIG)
    try:
        name = channel()
        connection = H2Client(server.port, tls=False, upgrade=f"/stream?channel={name}")
        try:
            upgraded = opened(connection.streams[1])
            other = opened(connection.open(f"/stream?channel={name}"))
            server.post("/publish", data="both", channel=name)
            assert upgraded.wait_events(1) == other.wait_events(1) == ["both"]
        finally:
            connection.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("environ", "shared"),
    [
        ({"SERVER_PROTOCOL": "HTTP/2.0"}, True),  # gunicorn's
        ({"SERVER_PROTOCOL": "HTTP/2"}, True),
        ({"SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.http2.send_trailers": print}, True),
        ({"SERVER_PROTOCOL": "HTTP/1.1"}, False),
        ({"SERVER_PROTOCOL": "HTTP/1.0"}, False),
    ],
)
def test_the_socket_of_an_http2_stream_is_never_the_librarys(environ: dict[str, object], shared: bool) -> None:
    sock = socket.socket()
    try:
        assert multiplexed({**environ, "gunicorn.socket": sock}) is shared
        assert socket_of({**environ, "gunicorn.socket": sock}) is (None if shared else sock)
    finally:
        sock.close()


def test_gunicorns_own_gevent_worker_serves_one_stream_of_a_connection_at_a_time(tmp_path: Path) -> None:
    # Why flask_sse_stream.gunicorn_http2 exists (docs/deployment.rst): should gunicorn change this, the
    # docs must say so.
    server = H2Server(tmp_path, tls=False, config=CONFIG, worker="gevent")
    try:
        connection = H2Client(server.port, tls=False)
        try:
            name = channel()
            first = opened(connection.open(f"/stream?channel={name}"))
            second = connection.open(f"/stream?channel={name}")
            server.post("/publish", data="only the first", channel=name)
            assert first.wait_events(1) == ["only the first"]
            assert second.status is None and not second.body
        finally:
            connection.close()
    finally:
        server.stop()
