"""send_new_event (SPEC 1): ids, JSON, validation before sending, any thread, never blocking, encode once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider

from flask_sse_stream import SSE, make_sse, send_new_event
from tests.support.client import StreamClient
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_until

MakeApp = Callable[..., tuple[Flask, SSE]]
Serve = Callable[[Flask], ThreadServer]
ClientFor = Callable[..., StreamClient]


def event_bytes(client: StreamClient) -> bytes:
    """The bytes of the next id'd event on ``client``'s stream, as the server wrote them."""
    received = b""
    while b"id: " not in received or not received.endswith(b"\n\n"):
        chunk = client.next_chunk()
        assert chunk is not None, f"the stream ended after {received!r}"
        received += chunk
    return received[received.index(b"id: ") :]


# -- ids and return values ----------------------------------------------------


def test_event_without_id_returns_none_and_is_not_stored(make_app: MakeApp) -> None:
    app, sse = make_app()
    assert sse.send_new_event(data="live") is None
    assert sse.send_new_event(data="live", id=False) is None
    assert sse.messages == {}


def test_ids_start_at_one_and_grow_by_one_across_channels(make_app: MakeApp) -> None:
    app, sse = make_app()
    sent = [
        sse.send_new_event(data="a", id=True),
        sse.send_new_event(data="b", id=True, channel="room"),
        sse.send_new_event(data="live", channel="room"),
        sse.send_new_event(data="c", id=True),
        sse.send_new_event(data="d", id=True, channel="third"),
    ]
    assert sent == [1, 2, None, 3, 4]
    assert list(sse.history("sse")) == [1, 3]
    assert list(sse.history("room")) == [2]
    assert list(sse.history("third")) == [4]


def test_ids_are_never_reused_after_eviction(make_app: MakeApp) -> None:
    app, sse = make_app(SSE_MAX_HISTORY=1)
    assert [sse.send_new_event(data=n, id=True) for n in range(4)] == [1, 2, 3, 4]
    assert list(sse.messages) == [4]


def test_module_function_sends_like_the_method() -> None:
    a_sse = make_sse()
    assert send_new_event(a_sse, data="Hello World!") is None
    assert send_new_event(a_sse, "Hello World! (again)", id=True) == 1
    assert send_new_event(a_sse, data={"x": 1}, event="update", id=True, retry=3000, channel="room-1") == 2
    assert a_sse.messages[1].data == "Hello World! (again)"
    stored = a_sse.history("room-1")[2]
    assert (stored.id, stored.event, stored.data, stored.retry) == (2, "update", {"x": 1}, 3000)
    assert stored.frame == b'id: 2\nevent: update\nretry: 3000\ndata: {"x": 1}\n\n'


@pytest.mark.parametrize("not_an_sse", [None, "sse", Flask(__name__)])
def test_module_function_wants_an_sse(not_an_sse: object) -> None:
    with pytest.raises(TypeError, match="SSE"):
        send_new_event(not_an_sse, data="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"b": 1, "a": None}, b'{"a": null, "b": 1}'),
        ([1, "two", [3]], b'[1, "two", [3]]'),
        (3, b"3"),
        (-2.5, b"-2.5"),
        (0, b"0"),
        (True, b"true"),
        (False, b"false"),
        ({"nested": {"z": [True, 1.0]}}, b'{"nested": {"z": [true, 1.0]}}'),
        ((1, 2), b"[1, 2]"),
    ],
    ids=repr,
)
def test_non_str_data_is_sent_as_json(make_app: MakeApp, data: Any, line: bytes) -> None:
    app, sse = make_app()
    assert sse.send_new_event(data=data, id=True) == 1
    assert sse.messages[1].frame == b"id: 1\ndata: " + line + b"\n\n"
    assert sse.messages[1].data == data


# -- invalid arguments: raised before anything is sent or stored ---------------

LONG_CHANNEL = "x" * 201

INVALID: list[tuple[dict[str, Any], type[Exception], list[str]]] = [
    # (keyword arguments, exception, substrings of its message: the bad value and the accepted form)
    ({"event": "a\rb"}, ValueError, [repr("a\rb"), "CR", "LF", "NUL"]),
    ({"event": "a\nb"}, ValueError, [repr("a\nb"), "CR", "LF", "NUL"]),
    ({"event": "a\r\nid: 9"}, ValueError, ["CR", "LF", "NUL"]),
    ({"event": "a\x00b"}, ValueError, [repr("a\x00b"), "CR", "LF", "NUL"]),
    ({"event": ""}, ValueError, ["''", "non-empty str"]),
    ({"event": "a\ud800"}, ValueError, [repr("a\ud800"), "non-empty str"]),
    ({"event": 5}, TypeError, ["5", "str"]),
    ({"event": b"update"}, TypeError, [repr(b"update"), "str"]),
    ({"channel": ""}, ValueError, ["''", "1 to 200 characters"]),
    ({"channel": LONG_CHANNEL}, ValueError, ["'xxxxxxxxxx", "1 to 200 characters"]),
    ({"channel": "a\x00"}, ValueError, [repr("a\x00"), "control characters"]),
    ({"channel": "a\x1f"}, ValueError, [repr("a\x1f"), "control characters"]),
    ({"channel": "a\x7f"}, ValueError, [repr("a\x7f"), "control characters"]),
    ({"channel": "a\x85"}, ValueError, [repr("a\x85"), "control characters"]),
    ({"channel": "a\n"}, ValueError, [repr("a\n"), "control characters"]),
    ({"channel": "a\ud800"}, ValueError, [repr("a\ud800"), "1 to 200 characters"]),
    ({"channel": 5}, TypeError, ["5", "str"]),
    ({"channel": None}, TypeError, ["None", "str"]),
    ({"id": "5"}, TypeError, ["'5'", "True", "False"]),
    ({"id": 1}, TypeError, ["1", "True", "False"]),
    ({"id": None}, TypeError, ["None", "True", "False"]),
    ({"retry": 0}, ValueError, ["0", "positive int"]),
    ({"retry": -1}, ValueError, ["-1", "positive int"]),
    ({"retry": "x"}, TypeError, ["'x'", "positive int"]),
    ({"retry": True}, TypeError, ["True", "positive int"]),
    ({"retry": 1.5}, TypeError, ["1.5", "positive int"]),
    ({"data": object()}, TypeError, ["<object object at", "JSON-serialisable"]),
    ({"data": {1, 2}}, TypeError, ["{1, 2}", "JSON-serialisable"]),
    ({"data": float("nan")}, TypeError, ["nan", "JSON-serialisable"]),
    ({"data": {"x": float("inf")}}, TypeError, ["inf", "JSON-serialisable"]),
    ({"data": "a\ud800"}, ValueError, [repr("a\ud800"), "UTF-8"]),
]


def invalid_id(case: Any) -> str:
    return repr(case) if not isinstance(case, dict) else ",".join(f"{k}={v!r}"[:40] for k, v in case.items())


@pytest.mark.parametrize(("kwargs", "error", "mentions"), INVALID, ids=invalid_id)
def test_invalid_argument_raises_before_anything_is_sent_or_stored(
    make_app: MakeApp,
    serve: Serve,
    client_for: ClientFor,
    kwargs: dict[str, Any],
    error: type[Exception],
    mentions: list[str],
) -> None:
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream")
    assert client.status == 200
    call = {"data": "bad", "id": True, **kwargs}
    with pytest.raises(error) as caught:
        sse.send_new_event(**call)
    for text in mentions:
        assert text in str(caught.value)
    assert sse.messages == {}
    # Nothing was sent either, and no id was taken: the next valid event is id 1 and comes first.
    assert sse.send_new_event(data="valid", id=True) == 1
    message = client.next_event()
    assert (message.data, message.id) == ("valid", 1)


@pytest.mark.parametrize(("kwargs", "error", "mentions"), INVALID, ids=invalid_id)
def test_module_function_rejects_the_same_arguments(
    kwargs: dict[str, Any], error: type[Exception], mentions: list[str]
) -> None:
    a_sse = make_sse()
    with pytest.raises(error) as caught:
        send_new_event(a_sse, **{"data": "bad", "id": True, **kwargs})
    for text in mentions:
        assert text in str(caught.value)
    assert a_sse.messages == {}


def test_channel_of_200_characters_is_accepted(make_app: MakeApp) -> None:
    app, sse = make_app()
    channel = "\u00e9" * 199 + "x"
    assert sse.send_new_event(data="x", id=True, channel=channel) == 1
    assert list(sse.history(channel)) == [1]


@pytest.mark.parametrize("channel", ["room 1", "caf\u00e9", "a/b:c?d", "\U0001f642", "a\u2028b"])
def test_printable_channel_names_are_accepted(make_app: MakeApp, channel: str) -> None:
    app, sse = make_app()
    assert sse.send_new_event(data="x", id=True, channel=channel) == 1
    assert list(sse.history(channel)) == [1]


# -- from any thread or greenlet ----------------------------------------------


def test_send_from_a_plain_thread_outside_any_context(make_app: MakeApp, serve: Serve, client_for: ClientFor) -> None:
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream")
    results: list[Any] = []

    def send() -> None:
        try:
            results.append(send_new_event(sse, data="from a thread", id=True))
        except BaseException as error:  # reported below
            results.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    thread.join(10)
    assert results == [1]
    message = client.next_event()
    assert (message.data, message.id) == ("from a thread", 1)


def test_send_from_a_greenlet_of_the_server(make_app: MakeApp, serve: Serve, client_for: ClientFor) -> None:
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream")
    server.call_in_hub(lambda: sse.send_new_event(data="from the hub", id=True))
    message = client.next_event()
    assert (message.data, message.id) == ("from the hub", 1)


def test_send_from_a_request_handler(make_app: MakeApp, serve: Serve, client_for: ClientFor) -> None:
    app, sse = make_app()

    @app.get("/send")
    def send() -> str:
        sent = current_app.sse.send_new_event(data=request.args["data"], id=True)  # type: ignore[attr-defined]
        return str(sent)

    server = serve(app)
    stream = client_for(server.port, "/stream")
    sender = client_for(server.port, "/send?data=hello")
    assert sender.status == 200
    assert sender.body() == b"1"
    message = stream.next_event()
    assert (message.data, message.id) == ("hello", 1)


def test_events_from_four_threads_arrive_once_each_in_id_order(
    make_app: MakeApp, serve: Serve, client_for: ClientFor
) -> None:
    app, sse = make_app()
    server = serve(app)
    client = client_for(server.port, "/stream")
    threads, per_thread = 4, 250
    start = threading.Barrier(threads)
    returned: dict[str, Any] = {}

    def send(t: int) -> None:
        start.wait(10)
        for i in range(per_thread):
            data = f"{t}-{i}"
            returned[data] = sse.send_new_event(data=data, id=True)

    workers = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    total = threads * per_thread
    assert sorted(returned.values()) == list(range(1, total + 1))

    messages = client.events(total, timeout=30)
    ids = [m.id for m in messages]
    assert ids == list(range(1, total + 1))
    assert {m.data: m.id for m in messages} == returned
    # Each thread's own events keep their order.
    for t in range(threads):
        mine = [m.data for m in messages if m.data.startswith(f"{t}-")]
        assert mine == [f"{t}-{i}" for i in range(per_thread)]


def test_send_never_blocks_on_a_client_that_stops_reading(
    make_app: MakeApp, serve: Serve, client_for: ClientFor
) -> None:
    app, sse = make_app(SSE_QUEUE_SIZE=16)
    server = serve(app)
    slow = client_for(server.port, "/stream", recv_buffer=4096)
    assert slow.status == 200
    assert len(sse.connections) == 1
    payload = "x" * 10_000
    done: list[int] = []

    def flood() -> None:
        for _ in range(2000):
            sse.send_new_event(data=payload)
        done.append(1)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    sender.join(60)
    assert done == [1], "send_new_event blocked on a client that does not read"
    wait_until(lambda: sse.connections == [])


# -- encode once ----------------------------------------------------------------


class CountingProvider(DefaultJSONProvider):
    calls = 0

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        CountingProvider.calls += 1
        return super().dumps(obj, **kwargs)


def test_one_send_to_three_clients_encodes_once(make_app: MakeApp, serve: Serve, client_for: ClientFor) -> None:
    app, sse = make_app()
    app.json = CountingProvider(app)
    server = serve(app)
    clients = [client_for(server.port, "/stream") for _ in range(3)]
    assert len(sse.connections) == 3
    CountingProvider.calls = 0
    sent = sse.send_new_event(data={"k": [1, "\u00e9"]}, event="e", id=True)
    assert CountingProvider.calls == 1
    frame = sse.messages[sent].frame
    assert frame == b'id: 1\nevent: e\ndata: {"k": [1, "\\u00e9"]}\n\n'
    for client in clients:
        assert event_bytes(client) == frame
    assert CountingProvider.calls == 1
