"""The routes an app gets from ``init_app``: the stream, the health probes, with a token publish and stats."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import MethodNotAllowed

from .core import SSECore
from .endpoints import PUBLISH_METHODS, STATS_METHODS, publish_response, stats_response
from .gunicorn_worker import on_request
from .metrics import keep_syncing
from .probes import LIVE, READY, live_response, ready_response
from .probes import METHODS as PROBE_METHODS
from .stream_view import stream_response

#: The name of the stream's blueprint: its endpoint is ``sse.stream``, as Flask-SSE's.
STREAM_BLUEPRINT = "sse"


#: The browser client of the WebSocket transport (an ES module), served at ``<prefix>/websocket.js``.
CLIENT = Path(__file__).with_name("websocket.js")


def websocket_client() -> Response:
    response = Response(CLIENT.read_bytes(), content_type="text/javascript; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


def register(app: Flask, core: SSECore) -> None:
    """Mount the stream at ``SSE_URL_PREFIX``, the probes beside it (and ``/publish``, ``/stats`` with a token)."""
    prefix = core.settings.url_prefix.rstrip("/")
    blueprint = Blueprint(STREAM_BLUEPRINT, __name__)
    stream = partial(stream_response, core, core.settings.cors_origins)
    path = "" if prefix else "/"
    blueprint.add_url_rule(path, "stream", stream, methods=["GET", "OPTIONS"], provide_automatic_options=False)
    # The same stream over a WebSocket (werkzeug routes an upgrade request only to a rule that says so).
    blueprint.add_url_rule(path, "stream_websocket", stream, methods=["GET"], websocket=True)
    # The views that answer any method at their path, the one the route does not list included.
    views: dict[str, Callable[[], Any]] = {prefix: stream}
    if core.settings.publish_token is not None:
        # For servers and scripts, beside the stream: <prefix>/publish and <prefix>/stats.
        endpoints = (("publish", publish_response, PUBLISH_METHODS), ("stats", stats_response, STATS_METHODS))
        for name, view, methods in endpoints:
            view_of_core = views[f"{prefix}/{name}"] = partial(view, core)
            blueprint.add_url_rule(f"/{name}", name, view_of_core, methods=methods, provide_automatic_options=False)
    blueprint.add_url_rule("/websocket.js", "websocket_client", websocket_client, methods=["GET"])
    for path, name, probe in ((LIVE, "health_live", live_response), (READY, "health_ready", ready_response)):
        view = partial(probe, core)
        blueprint.add_url_rule(path, name, view, methods=PROBE_METHODS, provide_automatic_options=False)
    app.register_blueprint(blueprint, url_prefix=prefix or None)

    @app.before_request
    def before_any_request() -> Any:
        on_request(request.environ)
        keep_syncing()
        # Werkzeug's routing answers any other method with an HTML 405 that
        # lists methods the view does not serve; the view answers it itself,
        # in its own form (the stream in plain text, as the standalone server
        # does; the endpoints in JSON). Flask runs this before it raises the
        # routing error.
        if isinstance(request.routing_exception, MethodNotAllowed):
            view = views.get(request.path.rstrip("/"))
            if view is not None:
                return view()
        return None
