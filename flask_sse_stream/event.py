"""One server-sent event: its fields, their validation and its wire form.

The wire form follows the WHATWG HTML standard, section "Server-sent events"
(9.2): UTF-8 lines of ``field: value``, a blank line ends the event. An event
is encoded once, when it is sent; the store and every recipient share that
one ``bytes`` object.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The channel of a stream without a ``channel`` parameter, and of a send without one.
DEFAULT_CHANNEL = "sse"
#: A channel name: 1 to 200 characters, none of them a C0 or C1 control or DEL.
MAX_CHANNEL_LENGTH = 200

# WHATWG 9.2.5: lines end in CRLF, CR or LF, and nothing else. str.splitlines()
# also splits on U+2028, U+0085, \f, \v, ... which the browser keeps in data.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_EVENT_FORBIDDEN = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True, slots=True)
class Event:
    """An event as sent: what :meth:`SSE.history` returns for each stored id.

    :param id: the id the library gave it, or ``None`` for a live-only event.
    :param event: the event name, or ``None`` (the browser's ``message``).
    :param data: the value passed to ``send_new_event`` (with Redis, its JSON
        round trip), or ``None``.
    :param retry: the reconnection time in milliseconds, or ``None``.
    """

    id: int | None
    event: str | None
    data: Any
    retry: int | None
    #: The encoded event, ``id:`` line included: the bytes every client gets.
    frame: bytes = field(repr=False, compare=False)
    #: ``time.monotonic()`` when it was sent, for ``SSE_HISTORY_TTL``.
    created: float = field(default_factory=time.monotonic, repr=False, compare=False)
    #: The data as sent: the ``str`` itself, or its JSON text.
    text: str | None = field(default=None, repr=False, compare=False)

    def with_id(self, id: int) -> Event:
        """The same event carrying ``id``: its frame gains the ``id:`` line."""
        return Event(id, self.event, self.data, self.retry, frame_with_id(id, self.frame), self.created, self.text)


def frame_with_id(id: int, frame: bytes) -> bytes:
    """An encoded event without ``id:`` line, with one: the one place that writes it."""
    return b"id: %d\n" % id + frame


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was, for error messages."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters in all)"


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    return shorten(repr(value), limit)


def check_channel(channel: object) -> str:
    """Return ``channel`` if it is a valid channel name, else raise."""
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, got {type(channel).__name__} {show(channel)}")
    if not 0 < len(channel) <= MAX_CHANNEL_LENGTH or _CONTROL.search(channel) or _SURROGATE.search(channel):
        raise ValueError(
            f"channel must be 1 to {MAX_CHANNEL_LENGTH} characters with no control characters"
            f" (C0, DEL, C1) or lone surrogates, got {show(channel)}"
        )
    return channel


def check_event_name(event: object, what: str = "event") -> str:
    """Return ``event`` if it can be an ``event:`` field, else raise."""
    if not isinstance(event, str):
        raise TypeError(f"{what} must be a str or None, got {type(event).__name__} {show(event)}")
    if not event or _EVENT_FORBIDDEN.search(event) or _SURROGATE.search(event):
        raise ValueError(f"{what} must be a non-empty str without CR, LF, NUL or lone surrogates, got {show(event)}")
    return event


def check_retry(retry: object, what: str = "retry") -> int:
    """Return ``retry`` if it is a positive ``int`` (``bool`` is not), else raise."""
    if not isinstance(retry, int) or isinstance(retry, bool):
        raise TypeError(
            f"{what} must be a positive int (milliseconds) or None, got {type(retry).__name__} {show(retry)}"
        )
    if retry <= 0:
        raise ValueError(f"{what} must be a positive int (milliseconds) or None, got {retry}")
    return retry


def new_event(
    data: Any,
    event: str | None,
    retry: int | None,
    dumps: Callable[[Any], str],
) -> Event:
    """Validate the fields of an event and encode it, without an id yet.

    ``dumps`` turns non-``str`` data into JSON (the app's JSON provider).
    Raises :class:`TypeError` or :class:`ValueError` naming the bad value.
    """
    if event is not None:
        check_event_name(event)
    if retry is not None:
        check_retry(retry)
    if data is None or isinstance(data, str):
        text = data
    else:
        try:
            text = dumps(data)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"data must be a str, None or a JSON-serialisable value,"
                f" got {type(data).__name__} {show(data)}: {error}"
            ) from None
    lines = []
    if event is not None:
        lines.append(f"event: {event}\n")
    if retry is not None:
        lines.append(f"retry: {retry}\n")
    if text is not None:
        # "data: " + line: the browser drops the one space after the colon,
        # so a line that starts with a space keeps it.
        lines.extend(f"data: {line}\n" for line in _LINE_BREAK.split(text))
    lines.append("\n")
    try:
        frame = "".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"data must be encodable as UTF-8 (no lone surrogates), got {show(text)}") from None
    return Event(None, event, data, retry, frame, text=text)


def reset_frame(name: str) -> bytes:
    """The reset event (``SSE_RESET_EVENT``): ``event: <name>`` and one empty data line, no id."""
    return f"event: {name}\ndata: \n\n".encode()
