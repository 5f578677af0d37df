"""A drop-in for Flask-SSE 1.0: change ``from flask_sse import sse`` to ``from flask_sse_stream.compat import sse``.

.. code-block:: python

    from flask_sse_stream.compat import sse

    app.config["REDIS_URL"] = "redis://localhost"
    app.register_blueprint(sse, url_prefix="/stream")

    @app.route("/hello")
    def publish_hello():
        sse.publish({"message": "Hello!"}, type="greeting")
        return "Message sent!"

Registering the blueprint sets up an :class:`~flask_sse_stream.SSE` on the
app (the stream at ``url_prefix``, ``SSE_REDIS_URL`` taken from
``SSE_REDIS_URL`` or else ``REDIS_URL``), and ``sse.publish`` sends through
the app of the current context. The ids of ``publish`` differ from
Flask-SSE's: see :meth:`~flask_sse_stream.SSE.publish`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask
from flask.sansio.app import App

from .blueprint import STREAM_BLUEPRINT
from .event import DEFAULT_CHANNEL
from .extension import SSE, PublishIdWarning

__all__ = ["PublishIdWarning", "ServerSentEventsBlueprint", "sse"]


class ServerSentEventsBlueprint(Blueprint):
    """Flask-SSE's blueprint, backed by :class:`~flask_sse_stream.SSE`.

    ``app.register_blueprint(sse, url_prefix="/stream")`` calls
    ``sse.extension.init_app(app)`` with ``SSE_URL_PREFIX`` set to
    ``url_prefix`` (without one: ``SSE_URL_PREFIX`` as configured), and with
    ``SSE_REDIS_URL`` set from ``REDIS_URL`` when it is not set itself. No
    Redis URL at all gives the in-process store (right for one process).
    Functions registered with ``@sse.before_request``, ``after_request``,
    ``teardown_request``, ``errorhandler`` and the like apply to the stream,
    so Flask-SSE's access checks (``abort(403)``) keep working: as in
    Flask-SSE, a stream takes one ``channel`` parameter (more is ``400``), the
    one ``request.args.get("channel")`` returns. As with any blueprint, adding
    such a function after registering raises :class:`AssertionError`.

    :param options: keyword options of :class:`~flask_sse_stream.SSE`.
    """

    def __init__(self, name: str = "sse", import_name: str = __name__, **options: Any) -> None:
        super().__init__(name, import_name)
        #: The :class:`~flask_sse_stream.SSE` behind this blueprint, on every app it is registered on.
        self.extension = SSE(**options)
        self.extension._one_channel = True

    def register(self, app: App, options: dict[str, Any]) -> None:
        """Set up the extension on ``app``; called by ``app.register_blueprint(sse, url_prefix=...)``."""
        if not isinstance(app, Flask):
            raise TypeError(f"the flask_sse_stream.compat blueprint needs a Flask app, got {type(app).__name__}")
        unsupported = sorted(set(options) - {"url_prefix"})
        if unsupported:
            raise ValueError(
                f"the flask_sse_stream.compat blueprint is registered on the app with at most url_prefix,"
                f" as app.register_blueprint(sse, url_prefix='/stream'); got {', '.join(unsupported)}"
            )
        config = app.config
        prefix = options.get("url_prefix", self.url_prefix)
        if prefix is not None:
            config["SSE_URL_PREFIX"] = prefix or "/"
        if not config.get("SSE_REDIS_URL") and config.get("REDIS_URL"):
            # Flask-SSE's order: SSE_REDIS_URL, then REDIS_URL.
            config["SSE_REDIS_URL"] = config["REDIS_URL"]
        self.extension.init_app(app)
        # As Blueprint.register does, with the stream's blueprint as the one
        # its functions apply to; from now on, adding one raises.
        self._got_registered_once = True
        self._merge_blueprint_funcs(app, STREAM_BLUEPRINT)
        state = self.make_setup_state(app, options, first_registration=True)
        for deferred in self.deferred_functions:
            deferred(state)

    def publish(
        self,
        data: Any,
        type: str | None = None,
        id: object = None,
        retry: int | None = None,
        channel: str = DEFAULT_CHANNEL,
    ) -> int | None:
        """Flask-SSE's ``publish``, through the app of the current context: see :meth:`flask_sse_stream.SSE.publish`.

        Returns the event's id, or ``None``.
        """
        return self.extension.publish(data, type, id, retry, channel, _stacklevel=3)


#: The blueprint to register, as Flask-SSE's ``flask_sse.sse``.
sse = ServerSentEventsBlueprint("sse", __name__)
