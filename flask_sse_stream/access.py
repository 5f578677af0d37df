"""Who a stream is for and until when, and which open streams must end.

``@sse.authorize`` may answer a channel with an :class:`Admission`: the
subject the stream is for (a user id, a session id) and when the admission
expires (a token's ``exp``). :meth:`SSE.end_streams` ends the open streams of
a channel, of a subject, or both, in every process: an :class:`Ending` says
which, and travels between processes as a few bytes of JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .event import check_channel, show

#: Longest subject, in characters.
MAX_SUBJECT = 200


def check_subject(value: object) -> str:
    """``value`` as a subject: a ``str`` (or ``int``, as text) of 1 to 200 characters without control characters."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"a subject must be a str or an int (a user id, a session id), got {show(value)}")
    text = str(value)
    if not 1 <= len(text) <= MAX_SUBJECT or any(_forbidden(c) for c in text):
        raise ValueError(
            f"a subject must be 1 to {MAX_SUBJECT} characters with no control characters"
            f" (C0, DEL, C1) or lone surrogates, got {show(value)}"
        )
    return text


def _forbidden(character: str) -> bool:
    code = ord(character)
    return code < 32 or 127 <= code <= 159 or 0xD800 <= code <= 0xDFFF


def unix_time(value: object) -> float:
    """``value`` as seconds since the epoch: a number (a JWT's ``exp``) or a timezone-aware ``datetime``."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"expires_at must be a timezone-aware datetime (or Unix seconds), got {show(value)}")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"expires_at must be Unix seconds (int or float) or an aware datetime, got {show(value)}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``@sse.authorize`` may return to admit a stream: whom it is for, and until when.

    :param subject: who the stream is for (``str`` or ``int``), so that
        :meth:`SSE.end_streams` can end it by subject.
    :param expires_at: when the stream must end, as Unix seconds (a token's
        ``exp``) or a timezone-aware ``datetime``. Past that moment the stream
        ends; the browser reconnects and the authorizer is asked again.
    """

    subject: str | int | None = None
    expires_at: float | datetime | None = None

    def __post_init__(self) -> None:
        if self.subject is not None:
            object.__setattr__(self, "subject", check_subject(self.subject))
        if self.expires_at is not None:
            object.__setattr__(self, "expires_at", unix_time(self.expires_at))


@dataclass(frozen=True, slots=True)
class Admitted:
    """The authorizers' answers for every channel of one stream, together."""

    #: The channel refused, if one was.
    refused: str | None = None
    subjects: frozenset[str] = frozenset()
    #: The earliest expiry, Unix seconds.
    expires_at: float | None = None


NO_SUBJECTS: frozenset[str] = frozenset()


def admit(authorizers: Iterable[Callable[[str], object]], channels: Iterable[str]) -> Admitted:
    """Ask every authorizer about every channel: the first refusal, or the subjects and earliest expiry."""
    subjects: set[str] = set()
    expires: list[float] = []
    for channel in channels:
        for authorize in authorizers:
            answer = authorize(channel)
            if not answer:
                return Admitted(refused=channel)
            if isinstance(answer, Admission):
                if answer.subject is not None:
                    subjects.add(answer.subject)  # type: ignore[arg-type]
                if answer.expires_at is not None:
                    expires.append(answer.expires_at)  # type: ignore[arg-type]
    # frozenset() of an empty set is a new 216-byte object each time: a stream
    # without a subject shares the one empty set instead (it holds this for life).
    return Admitted(None, frozenset(subjects) if subjects else NO_SUBJECTS, min(expires, default=None))


@dataclass(frozen=True, slots=True)
class Ending:
    """Which open streams :meth:`SSE.end_streams` ends: those of ``channel``, of ``subject``, or of both."""

    channel: str | None = None
    subject: str | None = None

    @classmethod
    def of(cls, channel: object, subject: object) -> Ending:
        """Checked arguments of ``end_streams``: a ``channel``, a ``subject``, or both."""
        if channel is None and subject is None:
            raise TypeError("end_streams needs a channel, a subject, or both: it never ends every stream")
        return cls(
            None if channel is None else check_channel(channel), None if subject is None else check_subject(subject)
        )

    def matches(self, channels: tuple[str, ...], subjects: frozenset[str]) -> bool:
        return (self.channel is None or self.channel in channels) and (self.subject is None or self.subject in subjects)

    def encode(self) -> bytes:
        return json.dumps([self.channel, self.subject], separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Ending:
        channel, subject = json.loads(data)
        return cls(channel, subject)


def describe(ending: Any) -> str:
    """``ending`` in a log line."""
    parts = [f"channel {ending.channel!r}"] if ending.channel is not None else []
    parts += [f"subject {ending.subject!r}"] if ending.subject is not None else []
    return " and ".join(parts)
