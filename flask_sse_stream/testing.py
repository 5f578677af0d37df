"""Testing an app's streams with Flask's test client: no server, no monkey-patching, and no hanging.

.. code-block:: python

    from flask_sse_stream.testing import open_stream

    def test_news_reaches_the_stream(app):
        client = app.test_client()
        with open_stream(client, channel="news") as stream:
            client.post("/news", data={"text": "Hello"})
            event = stream.next_event(timeout=2)
        assert (event.event, event.data) == ("news", "Hello")

A stream never ends by itself, and a test client that reads it would wait
for good. :func:`open_stream` opens it (subscribed when it returns, so what
is sent afterwards reaches it), reads it in a thread of its own, and hands
each event over as a :class:`ReceivedEvent`; :meth:`EventStream.next_event`
waits at most ``timeout`` seconds. It works with either backend, in a plain
pytest process or a monkey-patched one.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask.testing import FlaskClient

__all__ = ["EventStream", "ReceivedEvent", "open_stream"]

_LINE = re.compile(r"\r\n|\r|\n")
_END = object()


@dataclass(frozen=True)
class ReceivedEvent:
    """An event as a browser would dispatch it, with the fields of its own block."""

    #: The data, its lines joined with ``\\n`` (a str, whatever was sent: see :meth:`json`).
    data: str
    #: The event name, ``None`` for an unnamed event (the browser's ``"message"``).
    event: str | None = None
    #: The event's id, ``None`` for a live-only event.
    id: int | None = None
    #: The ``retry:`` field sent with the event, if any.
    retry: int | None = None

    def json(self) -> Any:
        """The data parsed as JSON (what ``send_new_event`` sends for anything but a ``str``)."""
        return json.loads(self.data)


class EventStream:
    """An open stream of a test client's app; what :func:`open_stream` returns.

    ``status_code`` and ``headers`` are the response's; a refused stream
    (``400``, ``403``, ``429``, ``503``) has its body in ``text`` and no events.
    """

    __test__ = False  # not a test class, whatever pytest's name rules

    def __init__(self, response: Any) -> None:
        self._response = response
        #: The response's status: ``200`` for an open stream.
        self.status_code: int = response.status_code
        #: The response's headers.
        self.headers = response.headers
        #: The body of a refused stream; ``""`` for an open one.
        self.text = ""
        #: The browser's ``lastEventId`` after the events read so far.
        self.last_event_id = ""
        #: The last ``retry:`` value received (a stream opens with one if ``SSE_RETRY`` is set).
        self.retry: int | None = None
        self._events: queue.Queue[Any] = queue.Queue()
        self._reader: threading.Thread | None = None
        if self.status_code != 200:
            self.text = response.get_data(as_text=True)
            response.close()
            return
        self._reader = threading.Thread(target=self._read, name="sse-test-stream", daemon=True)
        self._reader.start()

    def next_event(self, timeout: float = 5.0) -> ReceivedEvent:
        """The next event; :exc:`TimeoutError` if none comes within ``timeout`` seconds, :exc:`EOFError` at the end."""
        if self._reader is None:
            raise RuntimeError(f"the stream was refused with {self.status_code}: {self.text.strip()}")
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None
        if item is _END:
            self._events.put(_END)
            raise EOFError("the stream ended")
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def events(self, count: int, timeout: float = 5.0) -> list[ReceivedEvent]:
        """The next ``count`` events, each within ``timeout`` seconds of the one before."""
        return [self.next_event(timeout) for _ in range(count)]

    def close(self) -> None:
        """End the stream (the app sees its client leave) and the thread that reads it."""
        self._response.close()
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        parser = _Parser(self)
        try:
            for chunk in self._response.response:
                parser.feed(chunk.decode("utf-8", "replace"))
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self._events.put(error)
        self._events.put(_END)


class _Parser:
    """The WHATWG "interpreting an event stream" rules, for the events of one stream."""

    def __init__(self, stream: EventStream) -> None:
        self._stream = stream
        self._text = ""
        self._fields: dict[str, Any] = {}
        self._data: list[str] = []

    def feed(self, text: str) -> None:
        self._text += text
        while (match := _LINE.search(self._text)) is not None:
            if match.group() == "\r" and match.end() == len(self._text):
                return  # maybe the first half of a CRLF
            line, self._text = self._text[: match.start()], self._text[match.end() :]
            self._line(line)

    def _line(self, line: str) -> None:
        if not line:
            data, fields = self._data, self._fields
            self._data, self._fields = [], {}
            if data:  # an event without data is not dispatched
                self._stream._events.put(ReceivedEvent("\n".join(data), **fields))
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._fields["event"] = value
        elif name == "id":
            self._stream.last_event_id = value
            self._fields["id"] = int(value) if value.isdigit() else None
        elif name == "retry" and value.isdigit():
            self._stream.retry = self._fields["retry"] = int(value)


def open_stream(
    client: FlaskClient,
    channel: str | Iterable[str] = "sse",
    *,
    last_event_id: int | str | None = None,
    headers: dict[str, str] | None = None,
) -> EventStream:
    """Open the stream of ``client``'s app, subscribed when this returns; close it (or use ``with``).

    :param client: the app's ``app.test_client()``; its cookies go with the request.
    :param channel: a channel, or several for one stream.
    :param last_event_id: sent as ``Last-Event-ID``, to resume after that id.
    :param headers: more request headers (an ``Origin``, say).
    """
    prefix = client.application.config.get("SSE_URL_PREFIX", "/stream").rstrip("/") or "/"
    channels = [channel] if isinstance(channel, str) else list(channel)
    request_headers = dict(headers or {})
    if last_event_id is not None:
        request_headers["Last-Event-ID"] = str(last_event_id)
    query = urlencode([("channel", name) for name in channels])
    response = client.get(f"{prefix}?{query}", headers=request_headers, buffered=False)
    return EventStream(response)
