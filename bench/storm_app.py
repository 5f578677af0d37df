"""The app bench/storm.py runs: the stream on Redis, an authorizer that counts its calls, and what the driver needs.

- ``GET /stream?channel=``: the extension's stream; the authorizer admits every
  channel and counts its calls per 100 ms, in a file per worker process
  (``STORM_DIR/auth-<pid>.json``, rewritten every half second, so that a
  worker that stops leaves its counts behind);
- ``POST /publish?channel=&id=``: the request body as an event (id'd with ``id``),
  answering its id;
- ``POST /fill?channel=&n=&size=``: ``n`` id'd events of ``size`` bytes;
- ``POST /end?channel=``: ``end_streams(channel=...)``;
- ``GET /numbers``: this worker's ``SSE.stats`` and its pid.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
from flask import Flask, jsonify, request

from flask_sse_stream import SSE

app = Flask(__name__)
app.config.update(SSE_REDIS_URL=os.environ["REDIS_URL"], SSE_MAX_CONNECTIONS=50_000, SSE_KEEPALIVE=30)
if "SSE_RECONNECT_SPREAD" in os.environ:
    app.config["SSE_RECONNECT_SPREAD"] = float(os.environ["SSE_RECONNECT_SPREAD"])
sse = SSE(app)
calls: Counter[int] = Counter()
_writer: list[Any] = []
#: The collector's passes that took over 20 ms: (Unix time at its start, generation, seconds).
pauses: list[tuple[float, int, float]] = []
_gc_start = [0.0]


def _gc_watch(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    elif (took := time.perf_counter() - _gc_start[0]) > 0.02:
        pauses.append((time.time() - took, info["generation"], round(took, 3)))


gc.callbacks.append(_gc_watch)


@sse.authorize
def admit(channel: str) -> bool:
    calls[int(gevent.get_hub().loop.now() * 10)] += 1
    if not _writer:
        _writer.append(gevent.spawn(_write_counts))
    return True


def _write_counts() -> None:
    path = Path(os.environ["STORM_DIR"]) / f"auth-{os.getpid()}.json"
    clock = gevent.get_hub().loop.now
    offset = time.time() - clock()  # the buckets in Unix time
    while True:
        text = json.dumps({str(bucket / 10 + offset): n for bucket, n in calls.items()})
        path.write_text(text)
        path.with_name(f"gc-{os.getpid()}.json").write_text(json.dumps(pauses))
        gevent.sleep(0.5)


@app.post("/publish")
def publish() -> Any:
    sent = sse.send_new_event(data=request.get_data(as_text=True), id="id" in request.args,
                              channel=request.args["channel"])  # fmt: skip
    return jsonify(id=sent)


@app.post("/fill")
def fill() -> Any:
    data = "x" * int(request.args["size"])
    ids = [
        sse.send_new_event(data=data, id=True, channel=request.args["channel"]) for _ in range(int(request.args["n"]))
    ]
    return jsonify(last=ids[-1])


@app.post("/end")
def end() -> Any:
    sse.end_streams(channel=request.args["channel"])
    return jsonify(ended=True)


@app.post("/freeze")
def freeze() -> Any:
    """Move every object tracked so far out of the collector's reach (``gc.freeze()``): a warm worker's recipe."""
    gc.collect()
    gc.freeze()
    return jsonify(frozen=gc.get_freeze_count())


@app.get("/numbers")
def numbers() -> Any:
    if "objects" not in request.args:
        return jsonify(stats=sse.stats, pid=os.getpid())
    objects = gc.get_objects()  # what the collector scans, by type (the commonest first)
    kinds = Counter(type(item).__qualname__ for item in objects).most_common(int(request.args["objects"] or 20))
    return jsonify(stats=sse.stats, pid=os.getpid(), objects=len(objects), kinds=kinds)
