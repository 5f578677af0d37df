"""Server-sent events for Flask, under gevent."""

from .event import Event as Event
from .extension import SSE as SSE
from .extension import PublishIdWarning as PublishIdWarning
from .hub import Connection as Connection
from .seed import make_sse as make_sse
from .seed import send_new_event as send_new_event
from .server import StopServer as StopServer
from .server import start_sse_tcp_port as start_sse_tcp_port

__all__ = [
    "SSE",
    "Connection",
    "Event",
    "PublishIdWarning",
    "StopServer",
    "make_sse",
    "send_new_event",
    "start_sse_tcp_port",
]
__version__ = "0.1.0"
