"""A page whose stream is the WebSocket client the blueprint serves (``<prefix>/websocket.js``).

``window.source`` is its ``WebSocketSource``; ``window.received`` holds
``{type, lastEventId, data}`` per event (messages and the reset event),
``window.opens`` counts its opens.
"""

from __future__ import annotations

import json

PAGE = """<!doctype html>
<title>websocket</title>
<script type="module">
  import { WebSocketSource } from "/stream/websocket.js";
  window.received = [];
  window.opens = 0;
  const source = (window.source = new WebSocketSource(%s, { retry: 300, maxDelay: 2000 }));
  const keep = (event) => window.received.push({ type: event.type, lastEventId: event.lastEventId, data: event.data });
  source.onopen = () => { window.opens += 1; };
  source.onmessage = keep;
  source.addEventListener("sse-reset", keep);
</script>
"""


def page(stream_url: str) -> str:
    return PAGE % json.dumps(stream_url)
