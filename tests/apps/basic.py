"""The small app that the deployment tests run under each supported server.

``create_app()`` mounts the stream at ``/stream`` and adds:

- ``POST /publish``: ``current_app.sse.send_new_event`` with ``data``,
  ``event``, ``id`` (``1``/``true`` gives an id) and ``channel`` from the form
  or the query; answers ``{"id": ...}``. With ``via=thread`` the event is
  sent from a native OS thread (even in a monkey-patched process), which the
  request waits for. With ``then=sigterm`` the worker sends itself SIGTERM
  in the same turn of the event loop, right after the send.
- ``POST /burst?n=5``: sends ``n`` events (``burst 0`` …) in this one request,
  back to back, never yielding between them; answers ``{"ids": [...]}``.
- ``GET /ws-page?channel=``: a page on the WebSocket client (``tests/apps/ws_page.py``).
- ``GET /info``: what the process runs under (``patched``: is ``socket``
  monkey-patched), its pid, the number of open streams, how many are of
  ``?channel=`` (``of_channel``) and how many of those write to their
  sockets directly (``direct``), and whether gevent-websocket is imported.

Every response, the streams' too, carries ``X-Worker: <pid>``, so a test knows
which worker of a gunicorn served it. When the backend cannot reach its store
(``send_new_event`` raises :class:`ConnectionError`), ``/publish`` and
``/burst`` answer ``503`` with ``{"error": "<what happened>"}``.

The environment variables ``SSE_REDIS_URL``, ``SSE_REDIS_PREFIX`` and
``SSE_KEEPALIVE`` and ``SSE_RECONNECT_SPREAD`` (seconds), ``SSE_METRICS_CHANNELS``, ``SSE_QUEUE_SIZE`` and
``SSE_MAX_CONNECTIONS_PER_CLIENT``, ``SSE_DIRECT_WRITES`` (``0``/``1``), when set, configure the extension.
With ``SLOW_LOG_MS``, the library's log records (its debug ones too) go to a
handler that holds the process that long for each, as a synchronous handler
writing to a slow disk or socket would.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import gevent
import gevent.monkey
from flask import Flask, Response, current_app, jsonify, request

from flask_sse_stream import SSE
from tests.apps.ws_page import page as ws_page_html
from tests.support.internals import streams_of

_TRUE = ("1", "true", "yes", "on")


class _SlowHandler(logging.Handler):
    def __init__(self, seconds: float) -> None:
        super().__init__(logging.DEBUG)
        self.seconds = seconds

    def emit(self, record: logging.LogRecord) -> None:
        gevent.monkey.get_original("time", "sleep")(self.seconds)  # holds the whole hub, as blocking I/O does


def _log_slowly(seconds: float) -> None:
    library = logging.getLogger("flask_sse_stream")
    library.setLevel(logging.DEBUG)
    library.addHandler(_SlowHandler(seconds))


def create_app() -> Flask:
    app = Flask(__name__)
    for key in ("SSE_REDIS_URL", "SSE_REDIS_PREFIX"):
        if os.environ.get(key):
            app.config[key] = os.environ[key]
    for key in ("SSE_KEEPALIVE", "SSE_RECONNECT_SPREAD"):
        if os.environ.get(key):
            app.config[key] = float(os.environ[key])
    for key in ("SSE_METRICS_CHANNELS", "SSE_QUEUE_SIZE", "SSE_MAX_CONNECTIONS_PER_CLIENT"):
        if os.environ.get(key):
            app.config[key] = int(os.environ[key])
    if os.environ.get("SSE_DIRECT_WRITES"):
        app.config["SSE_DIRECT_WRITES"] = os.environ["SSE_DIRECT_WRITES"].lower() in _TRUE
    SSE(app)
    if os.environ.get("SLOW_LOG_MS"):
        _log_slowly(float(os.environ["SLOW_LOG_MS"]) / 1000)

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    @app.errorhandler(ConnectionError)
    def store_unavailable(error: ConnectionError) -> Any:
        return jsonify(error=str(error)), 503

    @app.post("/publish")
    def publish() -> Any:
        values = request.values
        sse = current_app.sse  # type: ignore[attr-defined]
        fields = {
            "data": values.get("data"),
            "event": values.get("event") or None,
            "id": values.get("id", "").lower() in _TRUE,
            "channel": values.get("channel") or "sse",
        }
        if values.get("via") == "thread":
            assigned = in_an_os_thread(lambda: sse.send_new_event(**fields))
        else:
            assigned = sse.send_new_event(**fields)
        if values.get("then") == "sigterm":
            # After the loop's pending callbacks (the direct writes of this send).
            gevent.get_hub().loop.run_callback(os.kill, os.getpid(), signal.SIGTERM)
        return jsonify(id=assigned)

    @app.post("/burst")
    def burst() -> Any:
        values = request.values
        count = int(values.get("n", "5"))
        with_id = values.get("id", "").lower() in _TRUE
        channel = values.get("channel") or "sse"
        send = current_app.sse.send_new_event  # type: ignore[attr-defined]
        ids = [send(data=f"burst {i}", id=with_id, channel=channel) for i in range(count)]
        return jsonify(ids=ids)

    @app.get("/ws-page")
    def ws_page() -> Any:
        return ws_page_html(f"/stream?channel={request.args.get('channel', 'sse')}")

    @app.get("/info")
    def info() -> Any:
        streams = streams_of(current_app._get_current_object())  # type: ignore[attr-defined]
        of_channel = [
            stream for stream in streams if request.args.get("channel", stream.channels[0]) in stream.channels
        ]
        return jsonify(
            patched=gevent.monkey.is_module_patched("socket"),
            pid=os.getpid(),
            streams=len(current_app.sse.connections),  # type: ignore[attr-defined]
            server=request.environ.get("SERVER_SOFTWARE"),
            geventwebsocket="geventwebsocket" in sys.modules,
            direct=sum(stream.writer is not None for stream in of_channel),
            of_channel=len(of_channel),
        )

    return app


def in_an_os_thread(function: Any) -> Any:
    """``function()`` in a native OS thread (not a greenlet, even when monkey-patched); its result."""
    start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")
    done = gevent.monkey.get_original("_thread", "allocate_lock")()
    done.acquire()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the request
            outcome["error"] = error
        finally:
            done.release()

    start_new_thread(run, ())
    # Wait without blocking this process's hub: a thread of gevent's pool waits for it.
    gevent.get_hub().threadpool.apply(done.acquire)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
