"""The walkthrough as a Flask app, for ``gunicorn -k gevent -w 4 'example_app:create_app()'``.

- ``GET /``: the page. It listens on the channels of ``?channel=`` (repeat it
  for several; none: the default channel ``sse``), shows unnamed events and
  those named in ``?event=`` or sent from its form, and its form sends events.
- ``POST /send``: sends the form's ``data`` to ``channel`` as event ``event``
  (if given), with an id if ``id`` is present; answers ``{"id": ...}``.
- ``/stream``: the extension's stream, on the same origin.

Every response carries ``X-Worker: <pid>``: which gunicorn worker served it.
Every ``SSE_*`` environment variable is a configuration key (JSON values,
such as ``SSE_CORS_ORIGINS='["https://example.com"]'``, are decoded, as
Flask's ``from_prefixed_env`` does); so ``SSE_REDIS_URL`` picks the Redis
backend, and without it each worker has its own store (the library warns when
gunicorn runs several).
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, Response, render_template, request, url_for

from flask_sse_stream import SSE

sse = SSE()


def create_app() -> Flask:
    app = Flask(__name__)
    for key, value in os.environ.items():
        if key.startswith("SSE_"):
            try:
                app.config[key] = json.loads(value)
            except ValueError:
                app.config[key] = value
    sse.init_app(app)

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    @app.get("/")
    def index() -> str:
        channels = request.args.getlist("channel") or ["sse"]
        return render_template(
            "app.html",
            stream_url=url_for("sse.stream", channel=request.args.getlist("channel")),
            channels=channels,
            events=request.args.getlist("event"),
            worker=os.getpid(),
        )

    @app.post("/send")
    def send() -> Any:
        form = request.form
        try:
            assigned = sse.send_new_event(
                data=form.get("data", ""),
                event=form.get("event") or None,
                id="id" in form,
                channel=form.get("channel") or "sse",
            )
        except (TypeError, ValueError) as error:
            return {"error": str(error)}, 400
        except ConnectionError as error:  # the Redis backend cannot reach Redis
            return {"error": str(error)}, 503
        return {"id": assigned}

    return app
