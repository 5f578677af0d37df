"""The standalone server runs the app's own request pipeline for its stream.

``start_sse_tcp_port`` on an app's ``SSE`` must not be a way around the app's
guards: ``@app.before_request``, the compat blueprint's
``@sse.before_request``, ``@sse.authorize``, ``after_request`` and error
handlers apply on its port as on the app's stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, request

from flask_sse_stream import SSE, send_new_event, start_sse_tcp_port
from flask_sse_stream.compat import ServerSentEventsBlueprint
from tests.support.client import StreamClient

Start = Callable[..., Any]


@pytest.fixture
def start() -> Iterator[Start]:
    """``start(port_no, a_sse, **kw)``: ``start_sse_tcp_port``, stopped after the test."""
    stops: list[Any] = []

    def run(*args: Any, **kwargs: Any) -> Any:
        stops.append(start_sse_tcp_port(*args, **kwargs))
        return stops[-1]

    yield run
    for stop in stops:
        stop()


@pytest.fixture
def connect(client_for: Callable[..., StreamClient]) -> Callable[..., StreamClient]:
    """``connect(port, path="/", headers=None, **kw)``: a client of the standalone server."""

    def open_stream(port: int, path: str = "/", headers: dict[str, str] | None = None, **kw: Any) -> StreamClient:
        return client_for(port, path, headers, **kw)

    return open_stream


def test_an_apps_before_request_guard_holds_on_the_standalone_port(
    start: Start, connect: Callable[..., StreamClient]
) -> None:
    app = Flask(__name__)
    sse = SSE(app)

    @app.before_request
    def streams_for_members_only() -> None:  # as docs/apps.rst recommends
        if request.endpoint == "sse.stream" and request.headers.get("X-Member") != "yes":
            abort(403)

    stop = start(0, sse)
    refused = connect(stop.port)
    assert refused.status == 403
    refused.body()
    member = connect(stop.port, headers={"X-Member": "yes"})
    assert member.status == 200
    send_new_event(sse, data="for members")
    assert member.next_event().data == "for members"


def test_the_compat_blueprints_guard_holds_on_the_standalone_port(
    start: Start, connect: Callable[..., StreamClient]
) -> None:
    blueprint = ServerSentEventsBlueprint()

    @blueprint.before_request
    def check_access() -> None:  # Flask-SSE's documented access control
        if request.args.get("channel") == "analytics":
            abort(403)

    app = Flask(__name__)
    app.register_blueprint(blueprint, url_prefix="/stream")
    try:
        stop = start(0, blueprint.extension)
        assert connect(stop.port, "/?channel=analytics").status == 403
        assert connect(stop.port, "/?channel=news").status == 200
    finally:
        blueprint.extension.close()


def test_after_request_and_error_handlers_apply_on_the_standalone_port(
    start: Start, connect: Callable[..., StreamClient]
) -> None:
    app = Flask(__name__)
    sse = SSE(app)

    @sse.authorize
    def only_news(channel: str) -> bool:
        return channel == "news"

    @app.errorhandler(403)
    def forbidden(error: Exception) -> tuple[str, int]:
        return "the app's own 403\n", 403

    @app.after_request
    def mark(response: Response) -> Response:
        response.headers["X-Seen-By-App"] = request.path
        return response

    @app.before_request
    def refuse_with_abort() -> None:
        if request.args.get("channel") == "aborted":
            abort(403)

    stop = start(0, sse)
    refused = connect(stop.port, "/?channel=secret")
    assert refused.status == 403  # @sse.authorize
    assert refused.headers["x-seen-by-app"] == "/stream"
    refused.body()
    aborted = connect(stop.port, "/?channel=aborted")
    assert aborted.status == 403
    assert aborted.body() == b"the app's own 403\n"
    news = connect(stop.port, "/?channel=news")
    assert news.status == 200
    assert news.headers["x-seen-by-app"] == "/stream"
    assert news.headers["content-type"] == "text/event-stream; charset=utf-8"
