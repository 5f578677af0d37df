"""The app the HTTP/2 tests run under gunicorn's own HTTP/2 (``flask_sse_stream.gunicorn_http2.GeventWorker``).

``create_app()`` mounts the stream at ``/stream``; its configuration is the
JSON object in the environment variable ``H2_SSE_CONFIG`` (``{"SSE_QUEUE_SIZE":
8}``...). ``@sse.authorize`` refuses the channel ``secret``. And:

- ``POST /publish``: ``send_new_event`` with ``data``, ``event``, ``id``
  (``1``: with an id) and ``channel``; answers ``{"id": ...}``.
- ``POST /burst?n=&channel=&size=``: ``n`` events (``burst <i>`` padded to
  ``size`` bytes of data) in this one request; answers ``{"ids": [...]}``.
- ``POST /end?channel=``: ``sse.end_streams(channel=...)``.
- ``GET /info``: the pid, the open streams, ``stats`` and ``count_streams()``.
- ``GET /metrics``: ``prometheus_client``'s default registry (``SSE_METRICS``).
- ``GET /page?channel=``: a page whose ``EventSource`` of that channel is
  ``window.source``, with what it received in ``window.received`` (``{type,
  lastEventId, data}``) and its number of opens in ``window.opens``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import prometheus_client
from flask import Flask, Response, jsonify, request

from flask_sse_stream import SSE

PAGE = """<!doctype html>
<title>h2</title>
<script>
  window.received = [];
  window.opens = 0;
  window.source = new EventSource(%s);
  source.onopen = () => { window.opens += 1; };
  source.onmessage = (e) => { window.received.push({type: e.type, lastEventId: e.lastEventId, data: e.data}); };
</script>
"""


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(json.loads(os.environ.get("H2_SSE_CONFIG") or "{}"))
    sse = SSE(app)

    @sse.authorize
    def admit(channel: str) -> bool:
        return channel != "secret"

    @app.post("/publish")
    def publish() -> Any:
        values = request.values
        sent = sse.send_new_event(
            data=values.get("data"),
            event=values.get("event") or None,
            id=values.get("id") == "1",
            channel=values.get("channel") or "sse",
        )
        return jsonify(id=sent)

    @app.post("/burst")
    def burst() -> Any:
        values = request.values
        size = int(values.get("size", "0"))
        channel = values.get("channel") or "sse"
        ids = [
            sse.send_new_event(data=f"burst {i}".ljust(size, "."), id=values.get("id") == "1", channel=channel)
            for i in range(int(values.get("n", "5")))
        ]
        return jsonify(ids=ids)

    @app.post("/end")
    def end() -> Any:
        sse.end_streams(channel=request.values.get("channel"))
        return jsonify(ended=True)

    @app.get("/info")
    def info() -> Any:
        return jsonify(pid=os.getpid(), streams=len(sse.connections), stats=sse.stats, count=sse.count_streams())

    @app.get("/metrics")
    def metrics() -> Any:
        return Response(prometheus_client.generate_latest(), content_type=prometheus_client.CONTENT_TYPE_LATEST)

    @app.get("/page")
    def page() -> Any:
        return PAGE % json.dumps(f"/stream?channel={request.args.get('channel', 'sse')}")

    return app
