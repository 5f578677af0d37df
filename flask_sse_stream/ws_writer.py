"""Direct writes of a WebSocket stream's frames, as socket_writer does for SSE chunks."""

from __future__ import annotations

from typing import Any

from .event import Event
from .socket_writer import DirectWriter, Flusher
from .ws_frames import event_frame


class FrameWriter(DirectWriter):
    """Direct writes of WebSocket frames (see socket_writer): no switch to the stream's greenlet per delivery.

    The reader hands its pongs over as ``partial`` (whole frames, written by
    the writer before anything else), so that one greenlet writes at a time.
    """

    __slots__ = ()

    def flush(self, flusher: Flusher) -> None:
        self.dirty = False
        stream = self.stream
        if not self.idle or stream.closed or self.partial is not None:
            if self.partial is not None:
                stream.waker().wake()
            return  # the writer writes it
        events = stream.drain()
        if events:
            self.send(self.framed(events), flusher)

    def framed(self, events: list[Event]) -> bytes:
        return event_frame(events[0]) if len(events) == 1 else b"".join([event_frame(event) for event in events])

    def hand_over(self, data: bytes) -> None:
        """Have the writer write ``data`` (whole frames) next; from the stream's thread."""
        self.partial = (self.partial or b"") + data
        self.stream.waker().wake()


def direct(sock: Any) -> Any:
    """The OS socket under the handler's plain gevent socket, if frames may be written to it directly."""
    if sock is None or not type(sock).__module__.startswith("gevent.") or hasattr(sock, "do_handshake"):
        return None
    return getattr(sock, "_sock", None)
