"""The per-app core: what one ``SSE`` does for one app, with no Flask extension around it.

It holds the app's settings, counters, local streams (the fan-out) and
backend, and does the work: checking and encoding an event and sending it,
opening a stream (subscribe, then read the store, then the replay
decision), the numbers, closing. The HTTP view, the publish endpoint, the
CLI and the gunicorn integration use it; the ``SSE`` extension wires it to
an app (:func:`attach`).
"""

from __future__ import annotations

import logging
import random
import time
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

from flask import Flask

from . import replay
from .access import Ending
from .backends import Backend, create_backend
from .config import Settings
from .event import Event, check_channel, new_event, show
from .fanout import Fanout
from .quiet_log import QuietLog
from .stats import Counters, numbers
from .stream import Stream

#: ``f(channel)``: false refuses the stream; true (an :class:`~flask_sse_stream.access.Admission`, say) admits it.
Authorizer = Callable[[str], object]


class Observer(Protocol):
    def observe(self, seconds: float) -> None: ...


#: Replay plans kept for the streams that share a read (a reconnect storm).
PLANS = 64

_cores: weakref.WeakKeyDictionary[Flask, SSECore] = weakref.WeakKeyDictionary()


class SSECore:
    """One ``SSE`` on one app (one ``SSE`` on two apps has two)."""

    def __init__(
        self,
        settings: Settings,
        authorizers: list[Authorizer],
        dumps: Callable[[Any], str],
        one_channel: bool = False,
    ) -> None:
        self.settings = settings
        #: Shared with the ``SSE`` object: ``@sse.authorize`` applies to every app.
        self.authorizers = authorizers
        #: Non-``str`` data as JSON, by the app's JSON provider.
        self.dumps = dumps
        #: Flask-SSE's blueprint: one ``channel`` parameter per stream.
        self.one_channel = one_channel
        self.counters = Counters()
        self.fanout = Fanout(self.counters)
        self.backend: Backend = create_backend(settings, self.fanout)
        #: Refusals logged at most once per ``SSE_LOG_INTERVAL`` per reason.
        self.log = QuietLog(logging.getLogger("flask_sse_stream"), settings.log_interval)
        #: Where the seconds of each ``send_new_event`` go, with metrics on (see metrics).
        self.latency: Observer | None = None
        # (id of a read, resume point) -> (that read, its plan), the latest PLANS of them.
        self._plans: dict[tuple[int, int | None], tuple[replay.StoreFacts, replay.ReplayPlan]] = {}

    def send_new_event(self, data: Any, event: str | None, id: bool, retry: int | None, channel: str) -> int | None:
        """Check and encode the event, then send it; its id or ``None``.

        Raises :class:`TypeError` or :class:`ValueError` before anything is
        sent or stored, :class:`ConnectionError` if the store cannot be reached.
        """
        latency = self.latency
        started = perf_counter() if latency is not None else 0.0
        if id is not True and id is not False:
            raise TypeError(
                "id must be True (give the event the next id and store it)"
                f" or False (send it live only), got {show(id)}"
            )
        check_channel(channel)
        encoded = new_event(data, event, retry, self.dumps)
        self._check_size(len(encoded.frame), data, stored=id and self.settings.max_history > 0)
        sent = self.backend.send(channel, encoded, with_id=id)
        self.counters.events_sent += 1
        if latency is not None:
            latency.observe(perf_counter() - started)
        return sent.id

    def _check_size(self, size: int, data: Any, stored: bool) -> None:
        """Refuse an event of ``size`` bytes as sent over ``SSE_MAX_EVENT_BYTES``, or, ``stored``, over the store's."""
        bound = self.settings.max_event_bytes
        if size > bound:
            raise ValueError(
                f"the event takes {size} bytes as sent (each line of data gets its own"
                f" 'data: '), over SSE_MAX_EVENT_BYTES ({bound}); got data {show(data)}"
            )
        bound = self.settings.max_history_bytes
        if stored and size > bound:
            # Stored, it would push every other event of its channel out and still not fit.
            raise ValueError(
                f"the event takes {size} bytes as sent, over SSE_MAX_HISTORY_BYTES ({bound}), the most"
                f" a channel's store holds: send it with id=False (live only); got data {show(data)}"
            )

    def open_stream(self, stream: Stream, after: int | None) -> replay.ReplayPlan:
        """Read the store for ``stream``, already subscribed, and decide its replay (resuming ``after``).

        Subscribed first, then the store is read: an event sent meanwhile is
        in both, and the stream drops the queued copy (ids up to ``upto``).
        Raises :class:`ConnectionError` if the store cannot be reached.
        """
        facts = self.backend.read_store(stream.channels, after=after)
        decided = self._plan(after, facts)
        stream.replayed(decided.upto)
        counters = self.counters
        counters.streams_opened += 1
        counters.resets_sent += decided.reset
        if decided.events:
            counters.replays_served += 1
            counters.events_replayed += len(decided.events)
        return decided

    def _plan(self, after: int | None, facts: replay.StoreFacts) -> replay.ReplayPlan:
        """The replay decision; streams that share a read and a resume point share its plan (and its list)."""
        key = (id(facts), after)
        kept = self._plans.get(key)
        if kept is not None and kept[0] is facts:
            return kept[1]
        decided = replay.plan(after, facts, self.settings.max_history > 0)
        self._plans[key] = (facts, decided)
        while len(self._plans) > PLANS:
            self._plans.pop(next(iter(self._plans)), None)
        return decided

    def deadline(self, expires_at: float | None) -> float | None:
        """When a stream admitted until ``expires_at`` (Unix seconds) must end, on the monotonic clock.

        The earlier of that and ``SSE_MAX_STREAM_AGE`` from now, the age cut
        by up to a tenth at random so that streams opened together (after a
        deploy, say) do not all come back at once.
        """
        now = time.monotonic()
        deadlines = [] if expires_at is None else [now + expires_at - time.time()]
        age = self.settings.max_stream_age
        if age is not None:
            deadlines.append(now + age * random.uniform(0.9, 1.0))
        return min(deadlines, default=None)

    def end_streams(self, ending: Ending) -> None:
        """End the streams ``ending`` matches in every process of the app (see ``SSE.end_streams``)."""
        self.backend.end_streams(ending)

    def count_streams(self, channel: str | None = None) -> dict[str, int]:
        """Open streams per channel in every process of the app; ``""``: all of them (see the backend's)."""
        return self.backend.count_streams(channel)

    def close_stream(self, stream: Stream) -> None:
        """``stream`` has ended: it leaves the fan-out (and the backend may stop listening to its channels)."""
        emptied = self.fanout.remove(stream)
        if emptied:
            self.backend.release(emptied)

    def history(self, channel: str) -> dict[int, Event]:
        check_channel(channel)
        return {event.id: event for event in self.backend.stored(channel)}  # type: ignore[misc]

    def stats(self) -> dict[str, Any]:
        """``SSE.stats``: this process's numbers, and the open streams of every process."""
        local = numbers(len(self.fanout), self.fanout.streams_by_channel(), self.counters)
        app: dict[str, Any] = {"app_streams": None, "app_streams_by_channel": None}  # if Redis does not answer
        try:
            counts = self.count_streams()
            app = {"app_streams": counts.pop("", 0), "app_streams_by_channel": dict(sorted(counts.items()))}
        except ConnectionError:
            pass
        return {"streams": local.pop("streams"), "streams_by_channel": local.pop("streams_by_channel"), **app, **local}

    def close(self) -> None:
        """End every stream and release the backend's connections."""
        self.fanout.close(self.fanout.streams(), hangup=True)
        self.backend.close()


def attach(app: Flask, core: SSECore) -> None:
    """Make ``core`` the one :func:`core_of` ``app`` finds."""
    _cores[app] = core


def core_of(app: Flask) -> SSECore:
    core = _cores.get(app)
    if core is None:
        raise RuntimeError(f"the app {app.name!r} has no SSE extension: did you forget SSE(app) or sse.init_app(app)?")
    return core


def all_cores() -> list[SSECore]:
    """The cores of every app of this process."""
    return list(_cores.values())
