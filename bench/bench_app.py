"""The benchmark harness's contract (../shared/bench/README.md), served through the public API only.

GET /stream?channel=bench is the extension's stream; POST /publish?channel=bench
sends the request body as the data of one event (with &id=<n>: an id'd, stored
event). With REDIS_URL set (the harness's `with_redis`), the Redis backend.
"""

from __future__ import annotations

import os

from flask import Flask, request

from flask_sse_stream import SSE

app = Flask(__name__)
app.config.update(
    SSE_REDIS_URL=os.environ.get("REDIS_URL"),
    SSE_MAX_CONNECTIONS=50_000,
)
if "SSE_REDIS_SUBSCRIBE" in os.environ:
    app.config["SSE_REDIS_SUBSCRIBE"] = os.environ["SSE_REDIS_SUBSCRIBE"]
if "SSE_DIRECT_WRITES" in os.environ:
    app.config["SSE_DIRECT_WRITES"] = os.environ["SSE_DIRECT_WRITES"] not in ("0", "false", "no")
if "SSE_KEEPALIVE" in os.environ:
    app.config["SSE_KEEPALIVE"] = float(os.environ["SSE_KEEPALIVE"])
sse = SSE(app)


@app.post("/publish")
def publish() -> tuple[str, int]:
    sse.send_new_event(
        data=request.get_data(as_text=True),
        id="id" in request.args,
        channel=request.args.get("channel", "sse"),
    )
    return "ok", 200
