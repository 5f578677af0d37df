"""An app with access control, for the tests of ending streams, expiry and counts across workers.

``create_app()`` mounts the stream at ``/stream``, whose authorizer admits
``?user=<name>`` unless that user is banned, as an :class:`Admission` for
subject ``<name>`` that expires at ``?exp=<Unix seconds>`` if given (a
token's ``exp``); no ``user``: refused. And:

- ``POST /ban?user=<name>``: bans the user (in Redis, with ``SSE_REDIS_URL``,
  so every worker knows), then ``sse.end_streams(subject=<name>)``, as a
  log-out would; ``POST /unban?user=<name>`` lifts it.
- ``POST /end?channel=...&subject=...``: ``sse.end_streams`` with those.
- ``POST /publish``: ``send_new_event`` with ``data``, ``channel``, ``id``.
- ``GET /counts[?channel=]``: ``{"all", "by_channel", "here", "one"}``:
  ``count_streams()``, ``count_streams_by_channel()``, this process's open
  streams, and ``count_streams(channel)``.
- ``GET /info``: this process's pid.
- ``GET /ws-page?user=<name>&channel=<channel>``: the same on the WebSocket client (``tests/apps/ws_page.py``).
- ``GET /page?user=<name>&channel=<channel>``: a page whose ``EventSource``
  is ``window.source``, with what it received in ``window.received``.

Every answer carries ``X-Worker: <pid>``. ``SSE_REDIS_URL``,
``SSE_COUNT_INTERVAL``, ``SSE_MAX_STREAM_AGE``, ``SSE_KEEPALIVE`` and
``SSE_RETRY`` from the environment (JSON values) configure the extension.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from flask import Flask, Response, jsonify, request

from flask_sse_stream import SSE, Admission
from tests.apps.ws_page import page as ws_page_html

BANNED = "tests:banned"
PAGE = """<!doctype html>
<title>access</title>
<script>
  window.received = [];
  window.source = new EventSource(%s);
  source.onmessage = (event) => { window.received.push({data: event.data, lastEventId: event.lastEventId}); };
</script>
"""


def create_app() -> Flask:
    app = Flask(__name__)
    for key in ("SSE_REDIS_URL", "SSE_COUNT_INTERVAL", "SSE_MAX_STREAM_AGE", "SSE_KEEPALIVE", "SSE_RETRY"):
        if os.environ.get(key):
            app.config[key] = json.loads(os.environ[key]) if key != "SSE_REDIS_URL" else os.environ[key]
    sse = SSE(app)
    store = redis.Redis.from_url(os.environ["SSE_REDIS_URL"]) if os.environ.get("SSE_REDIS_URL") else None
    banned_here: set[str] = set()

    def is_banned(user: str) -> bool:
        return bool(store.sismember(BANNED, user)) if store is not None else user in banned_here

    @sse.authorize
    def admit(channel: str) -> object:
        user = request.args.get("user")
        if not user or is_banned(user):
            return False
        expires = request.args.get("exp")
        return Admission(subject=user, expires_at=float(expires) if expires else None)

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    @app.post("/ban")
    def ban() -> Any:
        user = request.values["user"]
        if store is not None:
            store.sadd(BANNED, user)
        banned_here.add(user)
        sse.end_streams(subject=user)
        return jsonify(banned=user)

    @app.post("/unban")
    def unban() -> Any:
        user = request.values["user"]
        if store is not None:
            store.srem(BANNED, user)
        banned_here.discard(user)
        return jsonify(unbanned=user)

    @app.post("/end")
    def end() -> Any:
        sse.end_streams(channel=request.values.get("channel"), subject=request.values.get("subject"))
        return jsonify(ended=True)

    @app.post("/publish")
    def publish() -> Any:
        values = request.values
        channel = values.get("channel") or "sse"
        sent = sse.send_new_event(data=values.get("data"), id=values.get("id") == "1", channel=channel)
        return jsonify(id=sent)

    @app.get("/counts")
    def counts() -> Any:
        channel = request.args.get("channel")
        one = sse.count_streams(channel) if channel else None
        return jsonify(
            all=sse.count_streams(), by_channel=sse.count_streams_by_channel(), here=len(sse.connections), one=one
        )

    @app.get("/info")
    def info() -> Any:
        return jsonify(pid=os.getpid())

    @app.get("/ws-page")
    def ws_page() -> Any:
        return ws_page_html(f"/stream?user={request.args['user']}&channel={request.args.get('channel', 'sse')}")

    @app.get("/page")
    def page() -> Any:
        url = f"/stream?user={request.args['user']}&channel={request.args.get('channel', 'sse')}"
        return PAGE % json.dumps(url)

    return app
