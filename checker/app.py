"""The app under test: the library's stream and publish endpoints, and control endpoints for the checker.

``create_app()`` reads the ``SSE_*`` keys from the environment, adds
``X-Worker: <pid>`` to every response (the streams' too) and ``X-Auth-Start``
to the streams it authorized (over a WebSocket, whose answer the handler sent
before the app ran, a first text frame ``{"x-worker", "x-auth-start"}``
says the same), admits streams with the authorizer of
:mod:`.app_access`, and serves:

- ``POST /checker/send`` with a JSON body ``{"channel", "via", "data", "id"}``
  for one event, or ``{"channel", "via", "items": [{"data", "id"}...],
  "threads"}`` for several; ``timeout_ms`` and ``kill_ms`` for the paths that
  need them (see :mod:`.app_sends`). It answers ``{"results": [...], "pid"}``,
  one outcome per event, and ``400`` for a bad ``via``;
- ``POST /checker/end`` with ``{"channel", "subject", "revoke"}``: the
  subject added to the revocations first if ``revoke``, then
  ``current_app.sse.end_streams(channel=..., subject=...)``; ``503`` when it
  raised :class:`ConnectionError`;
- ``GET /checker/ping``: ``{"pid"}``.

With ``CHECKER_DIR`` set (the run's directory) the revocations live there
and each process samples its gevent hubs into it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from flask import Flask, Response, current_app, g, jsonify, request

from flask_sse_stream import SSE, send_new_event

from .app_access import authorizer, revoke, sample_hubs
from .app_sends import MANY, VIAS, Call, many, single

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
#: The longest a request's threads may be (the sender draws 4-8).
MAX_THREADS = 16


def create_app() -> Flask:
    app = Flask(__name__)
    for key, kind in CONFIG.items():
        if os.environ.get(key):
            app.config[key] = kind(os.environ[key])
    directory = Path(os.environ["CHECKER_DIR"]) if os.environ.get("CHECKER_DIR") else None
    sse = SSE(app)
    sse.authorize(authorizer(directory))
    if directory is not None:
        gevent.spawn(sample_hubs, directory)

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        if "auth_start" in g:
            response.headers["X-Auth-Start"] = repr(g.auth_start)
        ws = request.environ.get("wsgi.websocket")
        if ws is not None:
            _name_over(ws)
        return response

    @app.post("/checker/send")
    def send() -> Any:
        body = request.get_json(force=True)
        via = body.get("via", "method")
        if via not in VIAS:
            return jsonify(error=f"via must be one of {', '.join(VIAS)}, got {via!r}"), 400
        channel = body["channel"]
        if via in MANY:
            calls = [_call(via, channel, item["data"], bool(item.get("id", True))) for item in body["items"]]
            threads = min(max(int(body.get("threads", 4)), 1), MAX_THREADS)
            deadlines = [float(ms) / 1000 for ms in body.get("timeouts_ms", [])] or None
            results = many(via, calls, threads, deadlines)
        else:
            results = [single(via, _call(via, channel, body["data"], bool(body.get("id", True))), body)]
        return jsonify(results=results, pid=os.getpid())

    @app.post("/checker/end")
    def end() -> Any:
        body = request.get_json(force=True)
        channel, subject = body.get("channel"), body.get("subject")
        revoked = False
        if body.get("revoke") and subject is not None and directory is not None:
            revoke(directory, subject)  # first what the authorizer reads, then the streams
            revoked = True
        try:
            current_app.sse.end_streams(channel=channel, subject=subject)  # type: ignore[attr-defined]
        except ConnectionError as error:
            return jsonify(error=f"{type(error).__name__}: {error}", revoked=revoked, pid=os.getpid()), 503
        return jsonify(ended=True, revoked=revoked, pid=os.getpid(), t=time.monotonic())

    @app.get("/checker/ping")
    def ping() -> Any:
        return jsonify(pid=os.getpid())

    return app


def _name_over(ws: Any) -> None:
    """The stream's worker and authorization start, as its first frame: written before the stream's own."""
    fields: dict[str, object] = {"x-worker": os.getpid()}
    if "auth_start" in g:
        fields["x-auth-start"] = repr(g.auth_start)
    try:
        ws.send(json.dumps(fields))
    except Exception:  # noqa: BLE001 - the client is gone: the stream finds out itself
        pass


def _call(via: str, channel: str, data: str, with_id: bool) -> Call:
    sse = current_app.sse  # type: ignore[attr-defined]
    if via == "function":
        return lambda: send_new_event(sse, data=data, id=with_id, channel=channel)
    return lambda: sse.send_new_event(data=data, id=with_id, channel=channel)
