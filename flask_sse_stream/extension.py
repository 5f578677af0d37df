"""The Flask extension: ``SSE``."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context
from flask.json.provider import DefaultJSONProvider

from . import blueprint, config, metrics
from .access import Ending
from .cli import sse_cli
from .core import Authorizer, SSECore, attach
from .event import DEFAULT_CHANNEL, Event, check_channel, show
from .stream import StreamInfo


class PublishIdWarning(UserWarning):
    """:meth:`SSE.publish` got a Flask-SSE style ``id`` value: ids are allocated by the library.

    A true value gives the event the next id and stores it; a false one sends
    it live only. Pass ``id=True`` or ``id=False`` to say so without a warning.
    """


class SSE:
    """Server-sent events for a Flask app.

    .. code-block:: python

        sse = SSE()                      # or SSE(app), or SSE(app, keepalive=5)
        sse.init_app(app)                # the stream is now at /stream
        sse.send_new_event(data="Hello World!", id=True)

    :param app: the app to set up now, as :meth:`init_app` would.
    :param options: configuration keys in lower case without ``SSE_``
        (``keepalive=5`` for ``SSE_KEEPALIVE``); they replace the defaults,
        and keys set in ``app.config`` win over them.

    One ``SSE`` can serve several apps; each gets its own store, id counter
    and streams.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self._options = config.check_options(options)
        self._authorizers: list[Authorizer] = []
        self._cores: weakref.WeakKeyDictionary[Flask, SSECore] = weakref.WeakKeyDictionary()
        # Flask-SSE's blueprint (compat) takes one channel per stream.
        self._one_channel = False
        # The app of make_sse(), which has no other owner.
        self._own_app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up ``app``: read its configuration and register the stream blueprint.

        Reads (and fills in the defaults of) ``SSE_URL_PREFIX``,
        ``SSE_REDIS_URL``, ``SSE_KEEPALIVE``, ``SSE_RETRY``,
        ``SSE_MAX_HISTORY``, ``SSE_HISTORY_TTL``, ``SSE_QUEUE_SIZE``,
        ``SSE_MAX_CONNECTIONS``, ``SSE_CORS_ORIGINS``, ``SSE_RESET_EVENT``,
        ``SSE_REDIS_PREFIX``, ``SSE_DIRECT_WRITES``, ``SSE_PUBLISH_TOKEN``,
        ``SSE_TOMBSTONE_TTL``, ``SSE_MAX_CONNECTIONS_PER_CLIENT``,
        ``SSE_LOG_INTERVAL``, ``SSE_PUBLISH_TIMEOUT``, ``SSE_METRICS``,
        ``SSE_METRICS_CHANNELS``, ``SSE_CLIENT_IPV6_PREFIX``, ``SSE_MAX_EVENT_BYTES`` and ``SSE_MAX_HISTORY_BYTES``,
        once: later changes to ``app.config`` are not seen. Then
        ``app.extensions["sse"]`` and ``app.sse`` are this object, and the
        ``flask sse`` commands are added to the app's command line.
        """
        if "sse" in app.extensions:
            raise RuntimeError(f"an SSE extension is already registered on {app.name!r}; call init_app once per app")
        settings = config.load(app.config, self._options)
        core = SSECore(settings, self._authorizers, _json_dumps(app), self._one_channel)
        self._cores[app] = core
        attach(app, core)
        app.extensions["sse"] = self
        app.sse = self  # type: ignore[attr-defined]
        blueprint.register(app, core)
        metrics.enable(core)
        app.cli.add_command(sse_cli)

    def authorize(self, f: Authorizer) -> Authorizer:
        """Register ``f(channel)``, called in the request context before a stream opens.

        A stream of several channels calls it for each; one false answer
        (``False``, ``None``) answers ``403``. A true one admits the channel:
        ``True``, or an :class:`Admission` that names the stream's subject
        (for :meth:`end_streams`) and when it expires. Without any
        authorizer, every channel is open.

        .. code-block:: python

            @sse.authorize
            def may_listen(channel):
                if channel in ("sse", "news"):
                    return True
                user_id = session.get("user_id")
                return user_id is not None and channel == f"user-{user_id}"
        """
        self._authorizers.append(f)
        return f

    def end_streams(self, channel: str | None = None, subject: str | int | None = None) -> None:
        """End the open streams of ``channel``, of ``subject`` (see :class:`Admission`), or of both.

        In every process of the app: with Redis, every worker and host ends
        its matching streams within moments (a control message on the
        connections the library holds); in-process, at once. Each stream
        ends on an event boundary, and its browser reconnects with
        ``Last-Event-ID``: the authorizers are asked again, and a refusal
        (``403``) makes ``EventSource`` give up for good, while an admission
        resumes with nothing missed. A stream whose authorization was under
        way when the call arrived ends too, as it opens. See :ref:`ending-streams`.

        :raises TypeError, ValueError: without a channel or subject, or for an invalid one.
        :raises ConnectionError: if Redis cannot be reached (this process's streams have ended).
        """
        self._core().end_streams(Ending.of(channel, subject))

    def count_streams(self, channel: str | None = None) -> int:
        """Open streams of ``channel`` (or all open streams) in every process of the app.

        With Redis, each process's own counts are current, and the other
        processes' are at most about ``SSE_COUNT_INTERVAL`` (1 s) old; those
        of a process that died without a word drop out within 15 intervals.

        :raises ConnectionError: if Redis cannot be reached.
        """
        if channel is None:
            return self._core().count_streams("").get("", 0)
        return self._core().count_streams(check_channel(channel)).get(channel, 0)

    def count_streams_by_channel(self) -> dict[str, int]:
        """Open streams per channel in every process of the app (see :meth:`count_streams`)."""
        counts = self._core().count_streams()
        counts.pop("", None)
        return dict(sorted(counts.items()))

    def send_new_event(
        self,
        data: Any = None,
        event: str | None = None,
        id: bool = False,
        retry: int | None = None,
        channel: str = DEFAULT_CHANNEL,
    ) -> int | None:
        """Send an event to every stream of ``channel``; return its id, or ``None``.

        :param data: a ``str`` is sent as is, one ``data:`` line per line
            (split on CRLF, CR and LF only); any other value as JSON (the
            app's JSON provider); ``None`` sends no ``data:`` line.
        :param event: the event name: a non-empty ``str`` without CR, LF or NUL.
        :param id: ``True`` gives the event the next id (one counter for all
            channels of the app: from 1 in-process, from Redis's clock in
            microseconds with Redis) and stores it, to be replayed to
            streams that open later or resume with ``Last-Event-ID``;
            ``False`` sends it live only.
        :param retry: the browser's reconnection time in milliseconds, a positive ``int``.
        :param channel: 1 to 200 characters without control characters.
        :raises TypeError, ValueError: for an invalid argument, before anything is sent or stored.

        Safe from any greenlet or thread, inside or outside a request or app
        context (outside one, an ``SSE`` on exactly one app uses that app).
        It never blocks on a client: a stream too far behind is disconnected.
        With Redis it waits for a round trip, shared with the sends made meanwhile by other greenlets or
        threads (:class:`ConnectionError`: Redis did not answer, and the event may or may not have been sent).
        """
        return self._core().send_new_event(data, event, id, retry, channel)

    def publish(
        self,
        data: Any,
        type: str | None = None,
        id: object = None,
        retry: int | None = None,
        channel: str = DEFAULT_CHANNEL,
        *,
        _stacklevel: int = 2,
    ) -> int | None:
        """Flask-SSE's ``sse.publish``: :meth:`send_new_event` with Flask-SSE's names.

        ``type`` is the event name (``event``); ``data``, ``retry`` and
        ``channel`` are those of :meth:`send_new_event`. Returns the event's
        id, or ``None`` (Flask-SSE returned the number of Redis subscribers).

        Ids differ: Flask-SSE wrote the caller's ``id`` on the wire, here the
        library allocates them. ``id=True`` gives the event the next id and
        stores it; ``None`` (the default) or ``False`` sends it live only. Any
        other value is not sent: a true one (``id="msg-42"``) counts as
        ``True``, a false one as ``False``, with a :class:`PublishIdWarning`.

        .. code-block:: python

            sse.publish({"message": "Hello!"}, type="greeting")           # live only
            sse.publish({"message": "Hello!"}, type="greeting", id=True)  # stored: returns its id
        """
        with_id = publish_id(id, _stacklevel)
        return self.send_new_event(data=data, event=type, id=with_id, retry=retry, channel=channel)

    @property
    def connections(self) -> list[StreamInfo]:
        """The open streams of this process, each with ``channels``, ``remote_addr`` and ``started_at``."""
        return [stream.info() for stream in self._core().fanout.streams()]

    @property
    def stats(self) -> dict[str, Any]:
        """What this app's streams did in this process since it started.

        ``streams`` (open now) and ``streams_by_channel``; ``app_streams``
        and ``app_streams_by_channel``, the same for every process of the app
        (:meth:`count_streams`; ``None`` if Redis does not answer); then the
        running totals ``events_sent``, ``bytes_written``, ``streams_opened``,
        ``streams_refused`` and ``streams_refused_by_reason`` (``limit``,
        ``client_limit``, ``authorization``, ``bad_request``),
        ``replays_served``, ``events_replayed``, ``resets_sent``,
        ``slow_clients_dropped``, ``streams_ended``, ``streams_expired`` and
        ``redis_reconnects``. But for ``app_*``, per process: with several
        workers, each has its own. With
        ``SSE_PUBLISH_TOKEN`` set, ``GET <prefix>/stats`` answers them over
        HTTP, and ``flask sse stats`` prints them.
        """
        return self._core().stats()

    @property
    def messages(self) -> dict[int, Event]:
        """The stored events of the default channel ``sse``: ``history("sse")``."""
        return self.history(DEFAULT_CHANNEL)

    def history(self, channel: str = DEFAULT_CHANNEL) -> dict[int, Event]:
        """The stored events of ``channel``, as an id-ordered ``{id: event}``."""
        return self._core().history(channel)

    def close(self) -> None:
        """End the streams of this ``SSE`` on every app and release its Redis connections.

        For apps and tests that tear an ``SSE`` down; it sends nothing afterwards.
        """
        for core in list(self._cores.values()):
            core.close()

    def _core(self) -> SSECore:
        return self._cores[self._app()]

    def _app(self) -> Flask:
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            if app in self._cores:
                return app
            if len(self._cores) != 1:
                raise RuntimeError(
                    f"The current Flask app {app.name!r} is not registered with this 'SSE' instance."
                    " Did you forget to call 'init_app', or did you mean to use the app's own 'app.sse'?"
                )
        apps = list(self._cores)
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise RuntimeError(
                "This 'SSE' instance is not registered with any Flask app. Did you forget to call 'init_app'?"
            )
        raise RuntimeError(
            f"This 'SSE' instance serves {len(apps)} apps; call it inside an app context"
            " ('with app.app_context():') so it knows which one."
        )


def publish_id(id: object, stacklevel: int) -> bool:
    """Flask-SSE's ``id`` argument as ours: whether to give the event an id and store it.

    ``stacklevel`` is that of the caller's caller, for the warning.
    """
    if id is None:
        return False
    if isinstance(id, bool):
        return id
    meaning = "it gets the next id and is stored" if id else "it is sent live only"
    warnings.warn(
        f"flask_sse_stream allocates event ids itself: id={show(id)} is not sent, {meaning};"
        " pass id=True (the next id, stored) or id=False (live only)",
        PublishIdWarning,
        stacklevel=stacklevel + 1,
    )
    return bool(id)


def _json_dumps(app: Flask) -> Callable[[Any], str]:
    """The app's JSON provider's ``dumps``, whichever provider the app has when it is called."""
    app_ref = weakref.ref(app)

    def dumps(value: Any) -> str:
        provider = app_ref().json  # type: ignore[union-attr]
        if isinstance(provider, DefaultJSONProvider):
            # NaN and Infinity are not JSON: the browser's JSON.parse would reject them.
            return provider.dumps(value, allow_nan=False)
        return provider.dumps(value)

    return dumps
