"""White-box access for the tests that check what the public API does not show (memory bounds, say)."""

from __future__ import annotations

from flask import Flask

from flask_sse_stream.core import SSECore, core_of
from flask_sse_stream.stream import Stream


def core(app: Flask) -> SSECore:
    return core_of(app)


def streams_of(app: Flask) -> list[Stream]:
    """The open streams of ``app`` in this process, as the library holds them."""
    return core_of(app).fanout.streams()
