"""The wire form of one event (WHATWG HTML, "Server-sent events"): kwargs -> exact bytes."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from httpx_sse import connect_sse

from flask_sse_stream import SSE
from tests.support.servers import ThreadServer

MakeApp = Callable[..., tuple[Flask, SSE]]


@contextmanager
def stream_of(app: Flask, path: str = "/stream", headers: dict[str, str] | None = None) -> Iterator[Iterator[bytes]]:
    """The body of a stream opened with the app's test client, as the writes the server makes."""
    response = app.test_client().get(path, headers=headers, buffered=False)
    assert response.status_code == 200
    try:
        yield iter(response.response)
    finally:
        response.close()


def wire(app: Flask, sse: SSE, **kwargs: Any) -> bytes:
    """The bytes a connected stream receives for ``sse.send_new_event(**kwargs)``."""
    channel = kwargs.get("channel", "sse")
    with stream_of(app, f"/stream?channel={channel}") as body:
        opening = next(body)
        assert opening.startswith(b":")
        sse.send_new_event(**kwargs)
        return next(body)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hello"}, b"data: hello\n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc\nd"}, b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        ({"data": "a\n"}, b"data: a\ndata: \n\n"),
        ({"data": "\r\n"}, b"data: \ndata: \n\n"),
        ({"data": "\n\r"}, b"data: \ndata: \ndata: \n\n"),
        ({"data": "line\n\nafter"}, b"data: line\ndata: \ndata: after\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": None, "event": "ping"}, b"event: ping\n\n"),
        ({"retry": 10}, b"retry: 10\n\n"),
        ({"data": " lead"}, b"data:  lead\n\n"),
        ({"data": "  two\n three"}, b"data:   two\ndata:  three\n\n"),
        ({"data": "a\u2028b\u2029c"}, "data: a\u2028b\u2029c\n\n".encode()),
        ({"data": "a\x85b"}, "data: a\x85b\n\n".encode()),
        ({"data": "a\fb\vc\x1cd"}, b"data: a\fb\vc\x1cd\n\n"),
        ({"data": "\u00e9\U0001f642"}, b"data: \xc3\xa9\xf0\x9f\x99\x82\n\n"),
        ({"data": "x", "event": "\u00fcpdate"}, b"event: \xc3\xbcpdate\ndata: x\n\n"),
        ({"data": "x", "id": True}, b"id: 1\ndata: x\n\n"),
        ({"data": "x", "id": False}, b"data: x\n\n"),
        (
            {"data": "x\ny", "event": "update", "retry": 3000, "id": True},
            b"id: 1\nevent: update\nretry: 3000\ndata: x\ndata: y\n\n",
        ),
        ({"data": "x", "event": "update", "retry": 3000}, b"event: update\nretry: 3000\ndata: x\n\n"),
        ({"data": "x", "channel": "room-1", "id": True}, b"id: 1\ndata: x\n\n"),
        ({"data": {"b": 1, "a": [1, 2]}}, b'data: {"a": [1, 2], "b": 1}\n\n'),
        ({"data": [1, "x", None]}, b'data: [1, "x", null]\n\n'),
        ({"data": 3}, b"data: 3\n\n"),
        ({"data": 1.5}, b"data: 1.5\n\n"),
        ({"data": True}, b"data: true\n\n"),
        ({"data": False}, b"data: false\n\n"),
        ({"data": {"s": "\u00e9\nx"}}, b'data: {"s": "\\u00e9\\nx"}\n\n'),
        ({"data": {}}, b"data: {}\n\n"),
    ],
    ids=repr,
)
def test_event_is_encoded_to_exact_bytes(make_app: MakeApp, kwargs: dict[str, Any], expected: bytes) -> None:
    app, sse = make_app()
    assert wire(app, sse, **kwargs) == expected


def test_stored_frame_is_what_clients_receive(make_app: MakeApp) -> None:
    app, sse = make_app()
    received = wire(app, sse, data={"k": "v"}, event="e", retry=5, id=True)
    assert sse.history("sse")[1].frame == received == b'id: 1\nevent: e\nretry: 5\ndata: {"k": "v"}\n\n'


def test_id_line_counts_up_and_is_absent_on_live_events(make_app: MakeApp) -> None:
    app, sse = make_app()
    with stream_of(app) as body:
        next(body)
        sse.send_new_event(data="a", id=True)
        sse.send_new_event(data="b")
        sse.send_new_event(data="c", id=True)
        expected = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"
        received = b""
        while len(received) < len(expected):  # pending events may share one write
            received += next(body)
    assert received == expected


def test_json_data_goes_through_flasks_provider_default(make_app: MakeApp) -> None:
    app, sse = make_app()
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert wire(app, sse, data={"when": when, "key": key}) == (
        b'data: {"key": "12345678-1234-5678-1234-567812345678", "when": "Tue, 02 Jan 2024 03:04:05 GMT"}\n\n'
    )


def test_json_data_follows_the_apps_provider_settings(make_app: MakeApp) -> None:
    app, sse = make_app()
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    assert wire(app, sse, data={"b": "\u00e9", "a": 1}) == 'data: {"b": "\u00e9", "a": 1}\n\n'.encode()


def test_json_data_uses_a_custom_provider(make_app: MakeApp) -> None:
    class Compact(DefaultJSONProvider):
        def dumps(self, obj: Any, **kwargs: Any) -> str:
            kwargs.setdefault("separators", (",", ":"))
            return super().dumps(obj, **kwargs)

    app, sse = make_app()
    app.json = Compact(app)
    assert wire(app, sse, data={"b": [1, 2], "a": None}) == b'data: {"a":null,"b":[1,2]}\n\n'


def test_history_keeps_the_value_passed_not_its_json(make_app: MakeApp) -> None:
    app, sse = make_app()
    payload = {"b": [1, 2], "a": "x"}
    sse.send_new_event(data=payload, id=True)
    assert sse.history("sse")[1].data == payload
    assert sse.history("sse")[1].frame == b'id: 1\ndata: {"a": "x", "b": [1, 2]}\n\n'


@pytest.mark.parametrize(
    ("config", "name"),
    [({}, b"sse-reset"), ({"SSE_RESET_EVENT": "reload"}, b"reload")],
)
def test_reset_event_is_a_name_and_one_empty_data_line_without_id(
    make_app: MakeApp, config: dict[str, Any], name: bytes
) -> None:
    app, sse = make_app(**config)
    # An id this server never gave: the stream opens with the reset event.
    with stream_of(app, headers={"Last-Event-ID": "7"}) as body:
        first = next(body)
    assert first.startswith(b":")
    assert first.endswith(b"\n\nevent: " + name + b"\ndata: \n\n")
    assert b"id:" not in first


def test_reset_event_comes_before_the_replayed_events(make_app: MakeApp) -> None:
    app, sse = make_app()
    sse.send_new_event(data="kept", id=True)
    with stream_of(app, headers={"Last-Event-ID": "99"}) as body:
        first = next(body)
    assert first.endswith(b"\n\nevent: sse-reset\ndata: \n\nid: 1\ndata: kept\n\n")


# -- over a real server, read by an independent parser (httpx-sse) ------------


@pytest.mark.parametrize(
    ("data", "browser_data"),
    [
        ("a\n", "a\n"),
        ("", ""),
        ("x\r\ny\rz", "x\ny\nz"),
        ("\u2028", "\u2028"),
        ("\x85", "\x85"),
        ("\u00e9\U0001f642", "\u00e9\U0001f642"),
        (" lead", " lead"),
        ("a\fb\vc\u2029", "a\fb\vc\u2029"),
    ],
    ids=repr,
)
def test_browser_parser_gets_data_with_line_breaks_as_newlines(
    make_app: MakeApp, serve: Callable[[Flask], ThreadServer], data: str, browser_data: str
) -> None:
    app, sse = make_app()
    server = serve(app)
    with httpx.Client(timeout=10) as client:
        with connect_sse(client, "GET", f"http://127.0.0.1:{server.port}/stream") as source:
            assert source.response.status_code == 200
            sse.send_new_event(data=data, event="probe", id=True)
            sse.send_new_event(data="end")
            events = source.iter_sse()
            first, second = next(events), next(events)
    assert (first.event, first.data, first.id) == ("probe", browser_data, "1")
    assert (second.event, second.data, second.id) == ("message", "end", "1")
