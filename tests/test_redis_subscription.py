"""The subscription's reader: hiredis when installed, else a pure-Python one that must read the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_sse_stream.backends import redis_subscription
from flask_sse_stream.backends.redis_subscription import RespReader
from tests.support.redis_server import RedisServer
from tests.support.streams import until_end


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def message(channel: bytes, payload: bytes, push: bool) -> bytes:
    """A published message: a RESP2 array, or a RESP3 push (as redis-py may negotiate)."""
    return (b">3\r\n" if push else b"*3\r\n") + bulk(b"message") + bulk(channel) + bulk(payload)


def confirmation(kind: bytes, channel: bytes, count: int, push: bool) -> bytes:
    return (b">3\r\n" if push else b"*3\r\n") + bulk(kind) + bulk(channel) + b":%d\r\n" % count


replies = st.one_of(
    st.builds(message, st.binary(max_size=30), st.binary(max_size=300), st.booleans()),
    st.builds(
        confirmation,
        st.sampled_from([b"subscribe", b"unsubscribe"]),
        st.binary(max_size=20),
        st.integers(0, 99),
        st.booleans(),
    ),
)


def read_all(reader, pieces: list[bytes]) -> list[object]:
    got = []
    for piece in pieces:
        reader.feed(piece)
        while (reply := reader.gets()) is not False:
            got.append(reply)
    return got


@settings(max_examples=300, deadline=None)
@given(st.lists(replies, max_size=20), st.data())
def test_the_pure_python_reader_reads_what_hiredis_reads_in_any_pieces(sent: list[bytes], data) -> None:
    stream = b"".join(sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert read_all(RespReader(), pieces) == read_all(hiredis.Reader(), pieces)
    assert len(read_all(RespReader(), pieces)) == len(sent)


def test_an_error_reply_is_read_as_an_error() -> None:
    reader = RespReader()
    reader.feed(b"-NOAUTH Authentication required.\r\n")
    reply = reader.gets()
    assert isinstance(reply, Exception) and "NOAUTH" in str(reply)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def test_streams_on_redis_work_without_hiredis(redis_server, make_app, serve, client_for, monkeypatch) -> None:
    monkeypatch.setattr(redis_subscription, "hiredis", None)
    app, sse = make_app(SSE_REDIS_URL=redis_server.url)
    try:
        client = client_for(serve(app).port)
        sent = [sse.send_new_event(data=f"e{n}", id=True) for n in range(50)]
        assert [(m.id, m.data) for m in until_end(client, sse)] == [(id, f"e{n}") for n, id in enumerate(sent)]
    finally:
        sse.close()
