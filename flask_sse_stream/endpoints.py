"""The endpoints for servers and scripts: ``POST <prefix>/publish`` and ``GET <prefix>/stats``.

Both exist only when ``SSE_PUBLISH_TOKEN`` is set, and answer only requests
with ``Authorization: Bearer <token>``. They speak JSON and send no CORS
headers: the token belongs to servers and scripts, never to a page, so no
page of another origin needs to call them.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Response, request

from .core import SSECore
from .event import DEFAULT_CHANNEL, check_channel, check_event_name, check_retry, shorten, show
from .request_body import TooLarge, TooSlow, close_after, has_unread_body, read_body
from .stream_request import BadRequest, parse_channels, parse_query
from .stream_view import RETRY_AFTER

#: The largest request body the publish endpoint reads, in bytes: more is ``413``.
MAX_BODY = 1024 * 1024
#: Seconds a connection closed after an answer still takes (and drops) what the client sends.
BODY_LINGER = 2.0
#: The fields of the publish body, all optional.
FIELDS = ("data", "event", "id", "retry", "channel")
PUBLISH_METHODS = ["POST", "GET", "PUT", "PATCH", "DELETE", "OPTIONS"]
STATS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_CHALLENGE = 'Bearer realm="flask_sse_stream"'
#: What a ``503`` tells the caller: the detail (which Redis, why) goes to the log, for the operator.
UNAVAILABLE = "the event store (Redis) is unavailable; try again later"


class _Invalid(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def publish_response(core: SSECore) -> Response:
    """Answer a request to ``<prefix>/publish``: send the event of the JSON body."""
    refused = _check_request("POST", core)
    if refused is not None:
        return refused
    if request.content_type and not _is_json(request.mimetype):
        return _unread(
            _error(
                415,
                "the body must be JSON with Content-Type: application/json,"
                f" got Content-Type {show(request.content_type)}",
            )
        )
    try:
        environ = request.environ
        body = read_body(environ, request.stream, request.content_length, MAX_BODY, core.settings.publish_timeout)
    except TooLarge:
        return close_after(_error(413, f"the body must be at most {MAX_BODY} bytes"), environ, BODY_LINGER)
    except TooSlow as error:
        core.log.warning("slow_body", "refused a POST to %s from %s: %s", request.path, request.remote_addr, error)
        return close_after(_error(408, str(error)), environ, BODY_LINGER)
    try:
        fields = _parse(body)
        with_id = fields.get("id", False)
        if not isinstance(with_id, bool):
            raise _Invalid(
                "id must be a JSON boolean: true (give the event the next id and store it)"
                f" or false (send it live only), got {_json_text_of(with_id)}",
                "id",
            )
        channel = _field("channel", fields.get("channel", DEFAULT_CHANNEL), check_channel)
        event = fields.get("event")
        if event is not None:
            _field("event", event, check_event_name)
        retry = fields.get("retry")
        if retry is not None:
            _field("retry", retry, check_retry)
        # Every other field is checked: an error now is the data's.
        send = partial(core.send_new_event, event=event, id=with_id, retry=retry, channel=channel)
        sent = _field("data", fields.get("data"), send)
    except _Invalid as error:
        return _error(400, str(error), field=error.field)
    except ConnectionError as error:
        core.log.warning("publish_unavailable", "could not publish an event for %s: %s", request.remote_addr, error)
        return _error(503, UNAVAILABLE, {"Retry-After": str(RETRY_AFTER)})
    return _json(200, {"id": sent})


def stats_response(core: SSECore) -> Response:
    """Answer a request to ``<prefix>/stats``: ``sse.stats``, the store sizes and the pid.

    ``stored`` counts the stored events of each ``channel`` parameter; without
    one, of every channel that has a store.
    """
    refused = _check_request("GET", core)
    if refused is not None:
        return refused
    try:
        query = parse_query(request.environ.get("QUERY_STRING", ""))
        channels = parse_channels(query)
    except BadRequest as error:
        return _error(400, str(error), field="channel")
    try:
        if any(key == "channel" for key, _ in query):
            stored = {channel: len(core.backend.stored(channel)) for channel in channels}
        else:  # every channel that has a store
            stored = dict(sorted(core.backend.store_sizes().items()))
    except ConnectionError as error:
        core.log.warning("stats_unavailable", "could not read the stats for %s: %s", request.remote_addr, error)
        return _error(503, UNAVAILABLE, {"Retry-After": str(RETRY_AFTER)})
    response = _json(200, {**core.stats(), "stored": stored, "pid": os.getpid()})
    response.headers["Cache-Control"] = "no-store"
    return _unread(response)


def _check_request(method: str, core: SSECore) -> Response | None:
    """The answer to a request with another method or without the right token, else None.

    A refused request's body is never read: its connection closes after the answer.
    """
    refused = _refusal(method, core)
    return None if refused is None else _unread(refused)


def _unread(response: Response) -> Response:
    """``response``, after which the connection closes if the request's body was not read.

    Servers read (to discard) what is left of a body before the next request
    on the connection: a client that announces a body and sends none would
    hold a greenlet until the server gives up.
    """
    return close_after(response, request.environ, BODY_LINGER) if has_unread_body(request.environ) else response


def _refusal(method: str, core: SSECore) -> Response | None:
    allow = f"{method}, HEAD, OPTIONS" if method == "GET" else f"{method}, OPTIONS"
    if request.method == "OPTIONS":
        return Response(status=204, headers={"Allow": allow})
    if request.method != method and not (method == "GET" and request.method == "HEAD"):
        return _error(405, f"{request.method} is not allowed here; this endpoint answers {method}", {"Allow": allow})
    token = core.settings.publish_token
    if token is None:  # the endpoints exist only with a token
        return _error(404, "SSE_PUBLISH_TOKEN is not set: there is no such endpoint")
    header = request.headers.get("Authorization")
    if header is None:
        return _error(
            401,
            "this endpoint needs the header 'Authorization: Bearer <SSE_PUBLISH_TOKEN>'",
            {"WWW-Authenticate": _CHALLENGE},
        )
    scheme, _, given = header.strip().partition(" ")
    # Compared in constant time, so the time of the answer tells nothing of the token.
    right = hmac.compare_digest(given.strip().encode("latin-1", "replace"), token.encode("ascii"))
    if scheme.lower() != "bearer" or not right:
        core.log.warning(
            "token", "refused a %s to %s from %s: wrong token", request.method, request.path, request.remote_addr
        )
        return _error(
            401,
            "the token is wrong: send 'Authorization: Bearer <SSE_PUBLISH_TOKEN>'",
            {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )
    return None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _parse(body: bytes) -> dict[str, Any]:
    accepted = f"the body must be a JSON object with the optional fields {', '.join(FIELDS)}"
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise _Invalid(f"{accepted}, encoded in UTF-8; got bytes that are not UTF-8") from None
    except RecursionError:
        raise _Invalid(f"{accepted}; got JSON nested too deeply") from None
    except ValueError as error:
        raise _Invalid(f"{accepted}; got something that is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise _Invalid(f"{accepted}; got {_json_text_of(value)}")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise _Invalid(f"{accepted}; got the unknown field {unknown[0]!r}", unknown[0])
    return value


def _field(name: str, value: Any, check: Callable[[Any], Any]) -> Any:
    try:
        return check(value)
    except (TypeError, ValueError) as error:
        raise _Invalid(str(error), name) from None
    except RecursionError:
        raise _Invalid(f"{name} is nested too deeply to be sent as JSON", name) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_text_of(value: Any) -> str:
    return shorten(json.dumps(value))


def _error(status: int, message: str, headers: dict[str, str] | None = None, field: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    response = _json(status, body)
    if headers:
        response.headers.update(headers)
    return response


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body) + "\n", status=status, content_type="application/json")
