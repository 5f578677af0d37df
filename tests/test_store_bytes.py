"""SSE_MAX_HISTORY_BYTES: a channel's store holds at most so many bytes of events, for both backends.

An event is counted as ``SSE_MAX_EVENT_BYTES`` measures it: its ``event:``,
``retry:`` and ``data:`` lines as sent, without the ``id:`` line. Data of
``n`` plain characters makes ``n + 8`` bytes (``data: `` + the data + ``\\n``,
then the blank line).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.endpoints import MAX_BODY
from flask_sse_stream.event import new_event
from tests.support.backend_apps import OnABackend
from tests.support.redis_server import RedisServer, ids_from_one
from tests.support.streams import until_end
from tests.support.waiting import wait_until
from tests.test_publish import call

TOKEN = "store-bytes-token-0123456789"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def of_size(size: int, mark: str = "") -> str:
    """Data that makes an event of ``size`` bytes, as sent, starting with ``mark``."""
    return mark + "x" * (size - 8 - len(mark))


def send(sse: SSE, size: int, channel: str = "sse") -> int:
    number = sse.send_new_event(data=of_size(size), id=True, channel=channel)
    assert number is not None
    return number


class StoreBytesContract(OnABackend):
    def test_a_channel_keeps_only_its_newest_events_that_fit_in_the_bound(self, new_app):
        _, sse = new_app(SSE_MAX_HISTORY_BYTES=350)
        for _ in range(6):
            send(sse, 100, "a")
        send(sse, 100, "b")

        assert list(sse.history("a")) == [4, 5, 6]  # 300 bytes; a fourth would make 400
        assert list(sse.history("b")) == [7]  # per channel: "a" takes nothing of "b"'s bound
        assert send(sse, 250, "a") == 8  # 550 bytes: the two oldest leave
        assert list(sse.history("a")) == [6, 8]
        assert send(sse, 350, "a") == 9  # exactly the bound: it alone
        assert list(sse.history("a")) == [9]

    def test_a_resume_from_an_event_evicted_by_bytes_gets_the_reset_then_the_kept_events(
        self, new_app, serve, client_for
    ):
        app, sse = new_app(SSE_MAX_HISTORY_BYTES=350)
        server = serve(app)
        for _ in range(6):
            send(sse, 100)

        evicted = client_for(server.port, "/stream", {"Last-Event-ID": "2"})
        kept = client_for(server.port, "/stream", {"Last-Event-ID": "3"})

        reset, *rest = until_end(evicted, sse)
        assert (reset.event, reset.data, reset.id) == ("sse-reset", "", None)
        assert [(m.id, m.data) for m in rest] == [(n, of_size(100)) for n in (4, 5, 6)]
        assert [(m.event, m.id) for m in until_end(kept, sse)] == [("message", 4), ("message", 5), ("message", 6)]

    def test_eviction_by_count_frees_its_bytes(self, new_app):
        _, sse = new_app(SSE_MAX_HISTORY=2, SSE_MAX_HISTORY_BYTES=350)
        for _ in range(5):
            send(sse, 100)
        assert list(sse.history()) == [4, 5]
        assert send(sse, 150) == 6  # the count pushes 4 out: 250 bytes, under the bound
        assert list(sse.history()) == [5, 6]
        assert send(sse, 200) == 7  # the count pushes 5 out: 350 bytes
        assert list(sse.history()) == [6, 7]
        assert send(sse, 300) == 8  # the count pushes 6 out, the bytes 7 (500 bytes)
        assert list(sse.history()) == [8]

    def test_a_store_that_expired_counts_its_bytes_anew(self, new_app):
        _, sse = new_app(SSE_MAX_HISTORY_BYTES=350, SSE_HISTORY_TTL=0.3)
        for _ in range(3):
            send(sse, 100)
        wait_until(lambda: sse.history() == {}, 5, "the stored events to expire")
        for _ in range(3):
            send(sse, 100)
        assert list(sse.history()) == [4, 5, 6]  # the expired events count no more
        send(sse, 100)
        assert list(sse.history()) == [5, 6, 7]

    def test_an_event_over_the_bound_on_its_own_is_refused_naming_its_size(self, new_app):
        _, sse = new_app(SSE_MAX_HISTORY_BYTES=1000)
        assert send(sse, 900) == 1
        with pytest.raises(ValueError, match=r"over SSE_MAX_HISTORY_BYTES \(1000\)") as raised:
            sse.send_new_event(data="\n" * 200, id=True)  # 200 bytes of data, 1,408 bytes as sent
        assert "1408 bytes" in str(raised.value)
        assert list(sse.history()) == [1]  # nothing was sent, nothing left the store
        assert sse.send_new_event(data="\n" * 200) is None  # live only: not stored, so not refused
        assert send(sse, 1000) == 2


class TestMemoryStore(StoreBytesContract):
    @pytest.fixture
    def backend_config(self) -> dict[str, Any]:
        return {}

    def test_without_a_store_nothing_is_refused_for_its_bound(self, make_app):
        _, sse = make_app(SSE_MAX_HISTORY=0, SSE_MAX_HISTORY_BYTES=100)
        assert sse.send_new_event(data="x" * 500, id=True) == 1

    def test_the_default_bound_is_16_mib_four_of_the_largest_events(self, make_app):
        app, sse = make_app()
        assert app.config["SSE_MAX_HISTORY_BYTES"] == 16 * 1024 * 1024
        biggest = 4 * 1024 * 1024  # SSE_MAX_EVENT_BYTES
        for _ in range(5):
            send(sse, biggest)
        assert list(sse.history()) == [2, 3, 4, 5]

    def test_the_publish_endpoint_answers_400_to_an_event_over_the_bound(self, make_app, serve):
        app, sse = make_app(SSE_PUBLISH_TOKEN=TOKEN, SSE_MAX_HISTORY_BYTES=1024 * 1024)
        port = serve(app).port
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # Within the 1 MiB body limit and SSE_MAX_EVENT_BYTES; as sent a 3.5 MB event.
        answer = call(port, body={"data": "\n" * 500_000, "id": True}, headers=auth)
        assert answer.status == 400
        assert answer.json()["field"] == "data"
        assert "SSE_MAX_HISTORY_BYTES (1048576)" in answer.json()["error"]
        assert sse.history() == {}
        assert call(port, body={"data": "\n" * 500_000}, headers=auth).status == 200  # live only

    @pytest.mark.parametrize("value", [0, 63, -1, 1.5, "1000", True, None])
    def test_an_invalid_store_byte_bound_is_refused_naming_it(self, make_app, value):
        with pytest.raises(ValueError, match="SSE_MAX_HISTORY_BYTES must be an int of at least 64") as raised:
            make_app(SSE_MAX_HISTORY_BYTES=value)
        assert repr(value) in str(raised.value)

    def test_the_option_sets_the_bound(self):
        app = Flask(__name__)
        sse = SSE(app, max_history_bytes=200)
        assert app.config["SSE_MAX_HISTORY_BYTES"] == 200
        for _ in range(3):
            send(sse, 100)
        assert list(sse.history()) == [2, 3]


def test_the_growth_of_newlines_is_what_the_docs_say() -> None:
    # docs/config.rst (SSE_MAX_EVENT_BYTES) and docs/security.rst give these figures.
    assert len(new_event("\n" * 1_000_000, None, None, json.dumps).frame) == 7_000_008
    newlines = (MAX_BODY - len(json.dumps({"data": ""}))) // 2  # the most a publish body holds: "\\n" each
    assert len(json.dumps({"data": "\n" * newlines})) <= MAX_BODY < len(json.dumps({"data": "\n" * (newlines + 1)}))
    assert (newlines, len(new_event("\n" * newlines, None, None, json.dumps).frame)) == (524_282, 3_669_982)
    config = " ".join((DOCS / "config.rst").read_text().split())
    assert "a million newlines is a 7,000,008-byte event" in config
    assert "at most 524,282 of them, a 3,669,982-byte event, 3.7 MB" in config
    security = " ".join((DOCS / "security.rst").read_text().split())
    assert "a million newlines is a 7 MB event" in security
    assert "makes at most a 3.7 MB one" in security


# -- Redis ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class TestRedisStore(StoreBytesContract):
    @pytest.fixture(params=["channels", "app"])
    def backend_config(self, request, redis_server) -> dict[str, Any]:
        prefix = f"t{uuid.uuid4().hex[:12]}"
        ids_from_one(redis_server.url, prefix)
        return {"SSE_REDIS_URL": redis_server.url, "SSE_REDIS_PREFIX": prefix, "SSE_REDIS_SUBSCRIBE": request.param}

    def test_a_store_kept_without_a_byte_count_is_counted_whole_on_the_next_send(self, new_app, backend_config):
        # A store written before SSE_MAX_HISTORY_BYTES existed has no count of its bytes.
        _, sse = new_app(SSE_MAX_HISTORY_BYTES=350)
        for _ in range(3):
            send(sse, 100)
        client = redis.Redis.from_url(backend_config["SSE_REDIS_URL"])
        marks = f"{{{backend_config['SSE_REDIS_PREFIX']}}}:marks:sse"
        assert client.hget(marks, "bytes") == b"300"
        client.hdel(marks, "bytes")
        send(sse, 100)
        assert list(sse.history()) == [2, 3, 4]
        assert client.hget(marks, "bytes") == b"300"

    def test_a_store_trimmed_by_a_lower_max_history_keeps_its_byte_count(self, new_app, backend_config):
        # Another worker, deployed with a lower SSE_MAX_HISTORY, trims several events at once.
        _, before = new_app(SSE_MAX_HISTORY_BYTES=1000)
        for _ in range(5):
            send(before, 100)
        _, after = new_app(SSE_MAX_HISTORY=2, SSE_MAX_HISTORY_BYTES=1000)
        send(after, 100)
        assert list(after.history()) == [5, 6]
        client = redis.Redis.from_url(backend_config["SSE_REDIS_URL"])
        assert client.hget(f"{{{backend_config['SSE_REDIS_PREFIX']}}}:marks:sse", "bytes") == b"200"
