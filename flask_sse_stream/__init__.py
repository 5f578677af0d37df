"""Server-sent events for Flask, under gevent."""

from .access import Admission as Admission
from .event import Event as Event
from .extension import SSE as SSE
from .extension import PublishIdWarning as PublishIdWarning
from .racket import make_sse as make_sse
from .racket import send_new_event as send_new_event
from .server import StopServer as StopServer
from .server import start_sse_tcp_port as start_sse_tcp_port
from .stream import StreamInfo as StreamInfo

__all__ = [
    "SSE",
    "Admission",
    "Event",
    "PublishIdWarning",
    "StopServer",
    "StreamInfo",
    "make_sse",
    "send_new_event",
    "start_sse_tcp_port",
]
__version__ = "0.1.0"
