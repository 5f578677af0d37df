"""A stream whose HTTP/2 client has gone is freed at once, not at its next write.

On HTTP/2 the stream has no socket of its own to watch (the connection's
carries the other streams too): the worker tells the stream when the client
resets it (``RST_STREAM``, as a browser does for a page it closes or
reloads) or when the whole connection ends. Its slot and its count in
``count_streams``, ``stats`` and the metrics are then free within a
second, though the keep-alive (its next write) is 30 s away; a reload at
``SSE_MAX_CONNECTIONS_PER_CLIENT = 1`` is served, not refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.h2 import H2Client, H2Server, H2Stream
from tests.support.waiting import wait_until

#: Far beyond the second a departed stream may hold its slot.
KEEPALIVE = 30


def start(request: pytest.FixtureRequest, tmp: pytest.TempPathFactory, **config: object) -> Iterator[H2Server]:
    running = H2Server(tmp.mktemp(request.param), request.param == "tls", {"SSE_KEEPALIVE": KEEPALIVE, **config})
    yield running
    running.stop()


@pytest.fixture(scope="module", params=["tls", "h2c"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Server]:
    yield from start(request, tmp_path_factory)


@pytest.fixture(scope="module", params=["tls", "h2c"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Server]:
    yield from start(request, tmp_path_factory, SSE_MAX_CONNECTIONS_PER_CLIENT=1)


def path(channel: str | None = None) -> str:
    return f"/stream?channel={channel or f'c-{uuid.uuid4().hex[:8]}'}"


def opened(stream: H2Stream) -> H2Stream:
    stream.wait(lambda s: s.status == 200 and s.comments, 10, "open")
    return stream


def counted(server: H2Server) -> tuple[int, ...]:
    """The open streams as ``SSE.connections``, ``count_streams()``, ``stats`` and the metrics count them."""
    info = server.info()
    lines = server.http.get("/metrics").text.splitlines()
    gauge = next(line for line in lines if line.startswith("flask_sse_stream_streams_open "))
    return info["streams"], info["count"], info["stats"]["streams"], int(float(gauge.split()[1]))


def settles(server: H2Server, expected: tuple[int, ...], timeout: float, what: str) -> None:
    try:
        wait_until(lambda: counted(server) == expected, timeout, f"{what}: {expected} open")
    except AssertionError as error:
        raise AssertionError(f"{error}; counted {counted(server)}") from None


def test_a_stream_the_client_resets_is_freed_at_once_and_the_others_go_on(server: H2Server) -> None:
    settles(server, (0, 0, 0, 0), 5, "no stream open")
    connection = H2Client(server.port, server.tls)
    try:
        name = f"c-{uuid.uuid4().hex[:8]}"
        gone, stays = opened(connection.open(path(name))), opened(connection.open(path(name)))
        assert counted(server) == (2, 2, 2, 2)
        connection.reset(gone)
        settles(server, (1, 1, 1, 1), 1.0, "the reset stream freed")
        server.post("/publish", data="still here", channel=name)
        assert stays.wait_events(1) == ["still here"] and stays.ended is None
    finally:
        connection.close()


def test_closing_the_connection_frees_all_its_streams_at_once(server: H2Server) -> None:
    settles(server, (0, 0, 0, 0), 5, "no stream open")
    connection = H2Client(server.port, server.tls)
    try:
        for _ in range(5):
            opened(connection.open(path()))
        assert counted(server) == (5, 5, 5, 5)
    finally:
        connection.close()
    settles(server, (0, 0, 0, 0), 1.0, "the connection's streams freed")


def test_a_reload_after_a_reset_is_served_at_a_per_client_limit_of_1(limited: H2Server) -> None:
    wait_until(lambda: counted(limited)[0] == 0, 5, "no stream open")
    connection = H2Client(limited.port, limited.tls)
    try:
        first = opened(connection.open(path()))
        refused = connection.open(path())
        refused.wait(lambda s: s.ended is not None, 5, "refused")
        assert refused.status == 429  # the limit holds while the first is open
        connection.reset(first)  # the reload: the page's stream is reset, and asked for again
        again = connection.open(path())
        again.wait(lambda s: s.status is not None, 5, "answered")
        assert again.status == 200, f"{again.status}: {bytes(again.body)!r}"
    finally:
        connection.close()


def test_a_reload_on_a_new_connection_is_served_at_a_per_client_limit_of_1(limited: H2Server) -> None:
    wait_until(lambda: counted(limited)[0] == 0, 5, "no stream open")
    old = H2Client(limited.port, limited.tls)
    opened(old.open(path()))
    old.close()  # FIN: the browser closed the tab's connection
    new = H2Client(limited.port, limited.tls)
    try:
        again = new.open(path())
        again.wait(lambda s: s.status is not None, 5, "answered")
        assert again.status == 200, f"{again.status}: {bytes(again.body)!r}"
    finally:
        new.close()
