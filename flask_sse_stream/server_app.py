"""The WSGI app of the standalone server: the app's own request pipeline, for its stream only.

A request to ``/`` of the standalone port is served as the app would serve a
request to its stream (``SSE_URL_PREFIX``): the app's ``before_request``
functions (and the compat blueprint's), ``@sse.authorize``, its
``after_request`` and ``teardown_request`` functions and its error handlers
all run, as ``Flask.wsgi_app`` runs them. WSGI middleware wrapped around
``app.wsgi_app`` does not: the standalone port is not behind it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from .config import CorsOrigins
from .core import SSECore
from .stream_view import STANDALONE

_STREAM_ENDPOINT = "sse.stream"
_NOT_FOUND = [b"the stream is at /\n"]


def standalone_app(app: Flask, core: SSECore, origins: CorsOrigins, tag: object) -> Callable[..., Any]:
    """A WSGI app that serves only ``core``'s stream, at ``/``, to ``origins``, through ``app``'s pipeline."""
    path = core.settings.url_prefix.rstrip("/") or "/"
    rule = next(rule for rule in app.url_map.iter_rules() if rule.endpoint == _STREAM_ENDPOINT)

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return _NOT_FOUND
        address = environ.get("REMOTE_ADDR", "")
        if address.startswith("::ffff:"):  # an IPv4 client of the dual-stack listener
            environ["REMOTE_ADDR"] = address[len("::ffff:") :]
        # As a request to the app's own stream: request.path and
        # request.endpoint are what the app's guards look at.
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = "", path
        environ[STANDALONE] = (origins, tag)
        return _dispatch(app, rule, environ, start_response)

    return wsgi


def _dispatch(app: Flask, rule: Any, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``Flask.wsgi_app``, with the request routed to the stream whatever the Host (``SERVER_NAME``)."""
    ctx = app.request_context(environ)
    error: BaseException | None = None
    try:
        try:
            ctx.push()
            request = ctx.request
            request.url_rule, request.view_args, request.routing_exception = rule, {}, None
            response = app.full_dispatch_request()
        except Exception as caught:
            error = caught
            response = app.handle_exception(caught)
        except BaseException:
            error = sys.exc_info()[1]
            raise
        return response(environ, start_response)
    finally:
        if error is not None and app.should_ignore_error(error):
            error = None
        ctx.pop(error)
