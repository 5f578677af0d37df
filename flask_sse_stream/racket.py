"""The names of the Racket library this one ports: ``make-sse`` and ``send-new-event``."""

from __future__ import annotations

from typing import Any

from flask import Flask

from .event import DEFAULT_CHANNEL, show
from .extension import SSE


def make_sse(**options: Any) -> SSE:
    """A ready :class:`SSE` on a Flask app of its own (the seed's ``make-sse``).

    Serve it with :func:`start_sse_tcp_port`; send with :func:`send_new_event`
    or its method of the same name. ``options`` are those of :class:`SSE`.
    """
    a_sse = SSE(**options)
    app = Flask("flask_sse_stream")
    a_sse.init_app(app)
    a_sse._own_app = app  # the extension keeps its apps weakly; this one has no other owner
    return a_sse


def send_new_event(
    a_sse: SSE,
    data: Any = None,
    event: str | None = None,
    id: bool = False,
    retry: int | None = None,
    channel: str = DEFAULT_CHANNEL,
) -> int | None:
    """``a_sse.send_new_event(...)`` as a function (the seed's ``send-new-event``)."""
    if not isinstance(a_sse, SSE):
        raise TypeError(f"a_sse must be an SSE (see make_sse()), got {type(a_sse).__name__} {show(a_sse)}")
    return a_sse.send_new_event(data=data, event=event, id=id, retry=retry, channel=channel)
