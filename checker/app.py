"""The app under test: the library's stream and publish endpoint, and a control endpoint for the senders.

``create_app()`` reads the ``SSE_*`` keys from the environment, adds
``X-Worker: <pid>`` to every response (the streams' too), and serves
``POST /checker/send`` with a JSON body ``{"channel", "data", "via", "id"}``:

- ``via="method"``: ``current_app.sse.send_new_event`` in the request's greenlet;
- ``via="function"``: the module function ``send_new_event(sse, ...)``;
- ``via="greenlet"``: a send in a greenlet of its own, joined;
- ``via="thread"``: a send in a native OS thread (even when the process is
  monkey-patched), joined without blocking the hub.

It answers ``{"id": n, "pid": pid}``; ``503 {"error"}`` when the send raised
:class:`ConnectionError`; ``500 {"error", "traceback"}`` for anything else.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

import gevent
import gevent.monkey
from flask import Flask, Response, current_app, jsonify, request

from flask_sse_stream import SSE, send_new_event

#: Environment variables copied into ``app.config``, with their types.
CONFIG: dict[str, Callable[[str], Any]] = {
    "SSE_REDIS_URL": str,
    "SSE_REDIS_PREFIX": str,
    "SSE_KEEPALIVE": float,
    "SSE_MAX_HISTORY": int,
    "SSE_HISTORY_TTL": float,
    "SSE_QUEUE_SIZE": int,
    "SSE_PUBLISH_TOKEN": str,
    "SSE_RETRY": int,
    "SSE_REDIS_SUBSCRIBE": str,
}
VIAS = ("method", "function", "greenlet", "thread")
Send = Callable[[], "int | None"]


def create_app() -> Flask:
    app = Flask(__name__)
    for key, kind in CONFIG.items():
        if os.environ.get(key):
            app.config[key] = kind(os.environ[key])
    SSE(app)

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    @app.post("/checker/send")
    def send() -> Any:
        body = request.get_json(force=True)
        via = body.get("via", "method")
        if via not in VIAS:
            return jsonify(error=f"via must be one of {', '.join(VIAS)}, got {via!r}"), 400
        try:
            assigned = _send(via, body["channel"], body["data"], bool(body.get("id", True)))
        except ConnectionError as error:
            return jsonify(error=f"{type(error).__name__}: {error}", pid=os.getpid()), 503
        except BaseException as error:  # noqa: BLE001 - the checker records it as a finding
            text = "".join(traceback.format_exception(error))
            return jsonify(error=f"{type(error).__name__}: {error}", traceback=text, pid=os.getpid()), 500
        return jsonify(id=assigned, pid=os.getpid())

    @app.get("/checker/ping")
    def ping() -> Any:
        return jsonify(pid=os.getpid())

    return app


def _send(via: str, channel: str, data: str, with_id: bool) -> int | None:
    sse = current_app.sse  # type: ignore[attr-defined]
    if via == "method":
        return sse.send_new_event(data=data, id=with_id, channel=channel)  # type: ignore[no-any-return]
    if via == "function":
        return send_new_event(sse, data=data, id=with_id, channel=channel)

    def call() -> int | None:
        return sse.send_new_event(data=data, id=with_id, channel=channel)  # type: ignore[no-any-return]

    if via == "greenlet":
        return gevent.spawn(call).get()
    return _in_native_thread(call)


def _in_native_thread(call: Send) -> int | None:
    """Run ``call`` in a new OS thread; wait for it without blocking the gevent hub.

    ``threading.Thread`` is no way to get an OS thread in a patched process
    (it starts through the patched ``_thread.start_new_thread``: a greenlet),
    so this takes the originals of ``_thread``.
    """
    patched = gevent.monkey.is_module_patched("_thread")
    start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")
    done = gevent.monkey.get_original("_thread", "allocate_lock")()
    done.acquire()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["id"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the request
            outcome["error"] = error
        finally:
            done.release()

    start_new_thread(run, ())
    if patched:
        gevent.get_hub().threadpool.apply(done.acquire)  # a pool thread waits; the hub goes on
    else:
        done.acquire()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["id"]  # type: ignore[no-any-return]
