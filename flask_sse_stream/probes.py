"""Health probes: ``GET <prefix>/health/live`` and ``GET <prefix>/health/ready``.

No token: a load balancer or Kubernetes calls them, every second maybe. The
answers are short JSON, with no address, URL or secret in them, and never
cached.

- ``live``: ``200`` while the process serves requests.
- ``ready``: ``200`` when a new stream can be served: the backend answers
  and, with Redis, this process's subscription is up (the first probe starts
  it); ``503`` with the reason otherwise, and from the moment the process is
  told to stop (its streams move to other workers).
"""

from __future__ import annotations

import json

from flask import Response, request

from .core import SSECore
from .gunicorn_worker import shutting_down

#: The probes' paths under the stream's prefix.
LIVE = "/health/live"
READY = "/health/ready"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def live_response(core: SSECore) -> Response:
    """Answer ``<prefix>/health/live``."""
    return _refused_method() or _answer(200, {"status": "live"})


def ready_response(core: SSECore) -> Response:
    """Answer ``<prefix>/health/ready``."""
    refused = _refused_method()
    if refused is not None:
        return refused
    if shutting_down():
        return _answer(503, {"status": "unavailable", "reason": "this process is stopping"})
    reason = core.backend.unready()
    if reason is not None:
        return _answer(503, {"status": "unavailable", "reason": reason})
    return _answer(200, {"status": "ready"})


def _refused_method() -> Response | None:
    if request.method in ("GET", "HEAD"):
        return None
    if request.method == "OPTIONS":
        return Response(status=204, headers={"Allow": "GET, HEAD, OPTIONS"})
    return _answer(
        405, {"error": f"{request.method} is not allowed here; a probe answers GET"}, {"Allow": "GET, HEAD, OPTIONS"}
    )


def _answer(status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body) + "\n", status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    if headers:
        response.headers.update(headers)
    return response
