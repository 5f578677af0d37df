"""The extension (SPEC 1): Flask's conventions, state per app, make_sse, introspection."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest
from flask import Flask, current_app

from flask_sse_stream import SSE, make_sse, send_new_event
from flask_sse_stream.testing import open_stream
from tests.support.client import StreamClient
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_until

MakeApp = Callable[..., tuple[Flask, SSE]]


def stream_status(app: Flask, path: str = "/stream") -> tuple[int, str]:
    response = app.test_client().get(path, buffered=False)
    try:
        return response.status_code, response.headers.get("Content-Type", "")
    finally:
        response.close()


def test_init_app_later_sets_up_the_app() -> None:
    sse = SSE()
    app = Flask(__name__)
    sse.init_app(app)
    assert app.extensions["sse"] is sse
    assert app.sse is sse  # type: ignore[attr-defined]
    assert stream_status(app) == (200, "text/event-stream; charset=utf-8")


def test_sse_with_an_app_sets_it_up_at_once() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    assert app.extensions["sse"] is sse
    assert stream_status(app) == (200, "text/event-stream; charset=utf-8")


def test_current_app_sse_is_the_extension_inside_a_context() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    with app.app_context():
        assert current_app.sse is sse  # type: ignore[attr-defined]
        assert current_app.sse.send_new_event(data="x", id=True) == 1  # type: ignore[attr-defined]
    assert list(sse.messages) == [1]


def test_current_app_sse_inside_a_request_handler() -> None:
    app = Flask(__name__)
    sse = SSE(app)

    @app.post("/send")
    def send() -> str:
        return str(current_app.sse.send_new_event(data="from a view", id=True))  # type: ignore[attr-defined]

    assert app.test_client().post("/send").get_data() == b"1"
    assert sse.messages[1].data == "from a view"


def test_one_sse_on_two_apps_keeps_two_stores_and_two_counters() -> None:
    sse = SSE()
    first, second = Flask("first"), Flask("second")
    sse.init_app(first)
    sse.init_app(second)
    with first.app_context():
        assert sse.send_new_event(data="first-1", id=True) == 1
        assert sse.send_new_event(data="first-2", id=True, channel="other") == 2
    with second.app_context():
        assert sse.send_new_event(data="second-1", id=True) == 1
    with first.app_context():
        assert sse.send_new_event(data="first-3", id=True) == 3
        assert {i: e.data for i, e in sse.history("sse").items()} == {1: "first-1", 3: "first-3"}
        assert {i: e.data for i, e in sse.history("other").items()} == {2: "first-2"}
    with second.app_context():
        assert {i: e.data for i, e in sse.messages.items()} == {1: "second-1"}
        assert sse.history("other") == {}
    assert first.extensions["sse"] is second.extensions["sse"] is sse


def test_one_sse_on_two_apps_streams_each_apps_events_only() -> None:
    sse = SSE()
    first, second = Flask("first"), Flask("second")
    sse.init_app(first)
    sse.init_app(second)
    with open_stream(second.test_client()) as stream:
        with first.app_context():
            assert sse.connections == []
            sse.send_new_event(data="to first")
        with second.app_context():
            assert len(sse.connections) == 1
            sse.send_new_event(data="to second")
        assert stream.next_event().data == "to second"


def test_outside_any_context_two_apps_ask_for_an_app_context() -> None:
    sse = SSE()
    first, second = Flask("first"), Flask("second")
    sse.init_app(first)
    sse.init_app(second)
    with pytest.raises(RuntimeError, match="app context"):
        sse.send_new_event(data="x", id=True)
    with pytest.raises(RuntimeError, match="app context"):
        sse.history("sse")
    with pytest.raises(RuntimeError, match="app context"):
        sse.connections  # noqa: B018


def test_context_of_an_app_it_does_not_serve_is_an_error_when_ambiguous() -> None:
    sse = SSE()
    first, second = Flask("first"), Flask("second")
    sse.init_app(first)
    sse.init_app(second)
    with Flask("third").app_context():
        with pytest.raises(RuntimeError, match="init_app"):
            sse.send_new_event(data="x")


def test_outside_any_context_one_app_is_used() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    assert sse.send_new_event(data="x", id=True) == 1
    with app.app_context():
        assert list(sse.messages) == [1]


@pytest.mark.parametrize(
    "use",
    [
        lambda sse: sse.send_new_event(data="x"),
        lambda sse: send_new_event(sse, data="x"),
        lambda sse: sse.history("sse"),
        lambda sse: sse.messages,
        lambda sse: sse.connections,
    ],
    ids=["send_new_event", "module send_new_event", "history", "messages", "connections"],
)
def test_sse_without_an_app_says_to_call_init_app(use: Callable[[SSE], object]) -> None:
    with pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"):
        use(SSE())


def test_sse_without_an_app_in_another_apps_context_says_to_call_init_app() -> None:
    with Flask(__name__).app_context():
        with pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"):
            SSE().send_new_event(data="x")


def test_init_app_twice_on_one_app_is_an_error() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    with pytest.raises(RuntimeError, match="init_app"):
        sse.init_app(app)
    assert app.extensions["sse"] is sse


def test_second_sse_on_one_app_is_an_error() -> None:
    app = Flask(__name__)
    sse = SSE(app)
    with pytest.raises(RuntimeError):
        SSE(app)
    assert app.extensions["sse"] is sse


def test_make_sse_works_on_its_own() -> None:
    a_sse = make_sse(max_history=2)
    assert send_new_event(a_sse, data="one", id=True) == 1
    assert a_sse.send_new_event(data="two", id=True) == 2
    assert a_sse.send_new_event(data="three", id=True) == 3
    assert list(a_sse.messages) == [2, 3]
    assert a_sse.connections == []


def test_make_sse_keeps_working_after_garbage_collection() -> None:
    a_sse = make_sse()
    assert a_sse.send_new_event(data="before", id=True) == 1
    gc.collect()
    gc.collect()
    assert a_sse.send_new_event(data="after", id=True) == 2
    assert {i: e.data for i, e in a_sse.messages.items()} == {1: "before", 2: "after"}
    assert a_sse.connections == []


def test_make_sse_gives_separate_instances() -> None:
    first, second = make_sse(), make_sse()
    first.send_new_event(data="x", id=True)
    gc.collect()
    assert second.send_new_event(data="y", id=True) == 1
    assert list(first.messages) == [1]


def test_connections_lists_an_open_stream_until_the_client_leaves(
    make_app: MakeApp, serve: Callable[[Flask], ThreadServer], client_for: Callable[..., StreamClient]
) -> None:
    app, sse = make_app(SSE_KEEPALIVE=0.1)
    server = serve(app)
    before = time.time()
    client = client_for(server.port, "/stream?channel=b&channel=a&channel=b")
    after = time.time()
    assert client.status == 200
    [connection] = sse.connections
    assert connection.channels == ("b", "a")
    assert connection.remote_addr == "127.0.0.1"
    assert before - 1 <= connection.started_at <= after + 1
    client.close()
    wait_until(lambda: sse.connections == [])


def test_connections_lists_each_stream(
    make_app: MakeApp, serve: Callable[[Flask], ThreadServer], client_for: Callable[..., StreamClient]
) -> None:
    app, sse = make_app(SSE_KEEPALIVE=0.1)
    server = serve(app)
    default = client_for(server.port, "/stream")
    room = client_for(server.port, "/stream?channel=room")
    assert sorted(c.channels for c in sse.connections) == [("room",), ("sse",)]
    room.close()
    wait_until(lambda: [c.channels for c in sse.connections] == [("sse",)])
    default.close()
    wait_until(lambda: sse.connections == [])


def test_messages_is_the_history_of_the_default_channel(make_app: MakeApp) -> None:
    app, sse = make_app()
    sse.send_new_event(data="a", id=True)
    sse.send_new_event(data="elsewhere", id=True, channel="other")
    sse.send_new_event(data="live only")
    sse.send_new_event(data="b", id=True)
    assert sse.messages == sse.history("sse")
    assert {i: e.data for i, e in sse.messages.items()} == {1: "a", 3: "b"}


def test_history_is_an_id_ordered_dict_of_events(make_app: MakeApp) -> None:
    app, sse = make_app()
    payload = {"x": [1, 2]}
    sse.send_new_event(data=payload, event="update", retry=3000, id=True, channel="room")
    sse.send_new_event(data="live", channel="room")
    sse.send_new_event(data="other channel", id=True)
    sse.send_new_event(id=True, channel="room")
    sse.send_new_event(data="text", id=True, channel="room")
    history = sse.history("room")
    assert type(history) is dict
    assert list(history) == [1, 3, 4]
    first, second, third = history.values()
    assert (first.id, first.event, first.data, first.retry) == (1, "update", payload, 3000)
    assert (second.id, second.event, second.data, second.retry) == (3, None, None, None)
    assert (third.id, third.event, third.data, third.retry) == (4, None, "text", None)


def test_history_of_a_channel_never_used_is_empty(make_app: MakeApp) -> None:
    app, sse = make_app()
    assert sse.history("nobody-here") == {}
    assert sse.messages == {}


def test_history_keeps_the_last_max_history_events(make_app: MakeApp) -> None:
    app, sse = make_app(SSE_MAX_HISTORY=3)
    for n in range(5):
        sse.send_new_event(data=n, id=True)
    assert {i: e.data for i, e in sse.messages.items()} == {3: 2, 4: 3, 5: 4}


def test_max_history_zero_stores_nothing_but_ids_still_count(make_app: MakeApp) -> None:
    app, sse = make_app(SSE_MAX_HISTORY=0)
    assert sse.send_new_event(data="a", id=True) == 1
    assert sse.send_new_event(data="b", id=True) == 2
    assert sse.messages == {}
