"""Reading a stream up to "now": a live-only END event marks where a test stops reading."""

from __future__ import annotations

import time
from typing import Any

from .client import Message, StreamClient

END = "end-of-test"


def until_end(client: StreamClient, sse: Any, channel: str = "sse", timeout: float = 5.0) -> list[Message]:
    """Every event before a live-only END sent now: what the stream held, nothing more."""
    sse.send_new_event(data=END, channel=channel)
    deadline = time.monotonic() + timeout
    messages = []
    while True:
        message = client.next_event(max(deadline - time.monotonic(), 0.001))
        if message.data == END:
            return messages
        messages.append(message)
