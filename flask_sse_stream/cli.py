"""``flask sse send`` and ``flask sse stats``: the app's events and numbers from a shell.

Without ``--url`` they use the app's own backend, in the ``flask`` command's
process: with Redis that reaches every server on the same Redis; with the
in-process store it reaches no stream at all, since this process serves
none. With ``--url`` (the stream's URL, such as
``http://localhost:5000/stream``) they call the ``<url>/publish`` and
``<url>/stats`` endpoints of a running server instead.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

import click
from flask import current_app
from flask.cli import AppGroup

from .core import SSECore, core_of
from .event import DEFAULT_CHANNEL
from .redact import redact_url

#: Seconds the commands wait for a server that ``--url`` names.
TIMEOUT = 10.0

sse_cli = AppGroup("sse", help="Send server-sent events, and show what the streams did.")

_URL_HELP = (
    "The stream's URL on a running server, such as http://localhost:5000/stream (its SSE_URL_PREFIX):"
    " call its {endpoint} endpoint, <url>/{endpoint}, instead of the app's own backend. Needs the server's"
    " SSE_PUBLISH_TOKEN."
)
_TOKEN_HELP = "The server's SSE_PUBLISH_TOKEN, for --url. Default: the environment's, else the app's config."


@sse_cli.command("send")
@click.argument("text")
@click.option("--event", help="The event name (the browser's event type).")
@click.option("--id", "with_id", is_flag=True, help="Give the event the next id and store it (replayed later).")
@click.option("--retry", type=int, help="The browser's reconnection time, in milliseconds.")
@click.option("--channel", default=DEFAULT_CHANNEL, show_default=True, help="The channel to send to.")
@click.option("--json", "as_json", is_flag=True, help="Send TEXT parsed as JSON: sent as JSON data.")
@click.option("--url", help=_URL_HELP.format(endpoint="publish"))
@click.option("--token", envvar="SSE_PUBLISH_TOKEN", show_envvar=True, help=_TOKEN_HELP)
def send(
    text: str,
    event: str | None,
    with_id: bool,
    retry: int | None,
    channel: str,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Send TEXT as an event; print its id, or "sent" for a live-only event.

    With Redis (SSE_REDIS_URL) every server on the same Redis sends it to its
    streams. With the in-process store no stream receives it (this command's
    process serves none): use --url to send through a running server.
    """
    data: Any = text
    if as_json:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise click.BadParameter(f"TEXT must be JSON with --json ({error}), got {text!r}") from None
    if url is not None:
        body: dict[str, Any] = {"data": data, "event": event, "id": with_id, "retry": retry, "channel": channel}
        answer = _call(url, "publish", _token(token), body=body)
        sent = answer.get("id") if isinstance(answer, dict) else None
    else:
        core = _core()
        if core.settings.redis_url is None:
            click.echo(
                "Warning: SSE_REDIS_URL is not set: the in-process store reaches only the streams of this very"
                " process, and this flask command serves none, so no stream receives the event (and what --id"
                " stores is gone when the command ends). Set SSE_REDIS_URL, or send through a running server"
                " with --url.",
                err=True,
            )
        try:
            sent = core.send_new_event(data, event, with_id, retry, channel)
        except (TypeError, ValueError, ConnectionError) as error:
            raise click.ClickException(str(error)) from None
    click.echo("sent" if sent is None else sent)


@sse_cli.command("stats")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="A channel whose stored events to count; repeat it for several. Default: every channel with a store.",
)
@click.option("--url", help=_URL_HELP.format(endpoint="stats"))
@click.option("--token", envvar="SSE_PUBLISH_TOKEN", show_envvar=True, help=_TOKEN_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as one JSON object.")
def stats(channels: tuple[str, ...], url: str | None, token: str | None, as_json: bool) -> None:
    """Show open streams per channel, stored events and the counters of one process.

    The open streams of the whole app are counted across every process (with
    Redis); the other numbers are per process: without --url they are those
    of this flask command (no streams; with Redis, the shared store); with
    --url, those of the server process that answered (one worker of several,
    maybe).
    """
    if url is not None:
        numbers = _call(url, "stats", _token(token), query=[("channel", channel) for channel in channels])
        if not isinstance(numbers, dict):
            raise click.ClickException(f"{url}: expected a JSON object of numbers, got {numbers!r}")
        where = f"process {numbers.get('pid')} of the server at {url}"
    else:
        core = _core()
        try:
            if channels:
                stored = {channel: len(core.history(channel)) for channel in channels}
            else:
                stored = dict(sorted(core.backend.store_sizes().items()))
        except (TypeError, ValueError, ConnectionError) as error:
            raise click.ClickException(str(error)) from None
        numbers = {**core.stats(), "stored": stored, "pid": os.getpid()}
        where = "this flask command's own process, which serves no streams"
    if as_json:
        click.echo(json.dumps(numbers, indent=2))
        return
    by_channel = numbers.pop("streams_by_channel", {})
    app_streams, app_by_channel = numbers.pop("app_streams", None), numbers.pop("app_streams_by_channel", None)
    stored = numbers.pop("stored", {})
    numbers.pop("pid", None)
    click.echo(f"Numbers of {where} (each process counts its own, but for the whole app's streams).")
    if app_streams is None:
        click.echo("Open streams in the whole app: unknown (Redis does not answer)")
    else:
        click.echo(f"Open streams in the whole app (every process): {app_streams}")
        for channel, count in sorted((app_by_channel or {}).items()):
            click.echo(f"  {channel}: {count}")
    click.echo(f"Open streams: {numbers.pop('streams', 0)}")
    for channel, count in sorted(by_channel.items()):
        click.echo(f"  {channel}: {count}")
    click.echo("Stored events:")
    for channel, count in stored.items():
        click.echo(f"  {channel}: {count}")
    click.echo("Since the process started:")
    for name, value in numbers.items():
        if isinstance(value, dict):
            click.echo(f"  {name}:")
            for key, count in value.items():
                click.echo(f"    {key}: {count}")
        else:
            click.echo(f"  {name}: {value}")


def _core() -> SSECore:
    try:
        return core_of(current_app._get_current_object())  # type: ignore[attr-defined]
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None


def _token(token: str | None) -> str:
    token = token or current_app.config.get("SSE_PUBLISH_TOKEN")
    if not token:
        raise click.UsageError(
            "--url needs the server's SSE_PUBLISH_TOKEN: --token, or SSE_PUBLISH_TOKEN in the environment"
            " or the app's config"
        )
    return str(token)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _endpoint(url: str, name: str) -> str:
    try:
        parts = urlsplit(url)
        userinfo = parts.username is not None
    except ValueError:
        parts, userinfo = urlsplit(""), False
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment or userinfo:
        raise click.BadParameter(
            f"--url must be the stream's http:// or https:// URL without a query or a user name (the token"
            f" goes in --token), such as http://localhost:5000/stream; got {redact_url(url)!r}",
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{name}"


def _call(url: str, name: str, token: str, body: Any = None, query: list[tuple[str, str]] | None = None) -> Any:
    """The JSON answer of ``<url>/<name>``: a POST of ``body``, or a GET without one."""
    endpoint = _endpoint(url, name)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    target = f"{endpoint}?{urlencode(query)}" if query else endpoint
    request = urllib.request.Request(target, data=data, headers=headers, method="GET" if data is None else "POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            answer = response.read()
    except urllib.error.HTTPError as error:
        _fail(endpoint, error)
    except OSError as error:  # URLError is an OSError
        raise click.ClickException(f"could not reach {endpoint}: {getattr(error, 'reason', error)}") from None
    try:
        return json.loads(answer)
    except ValueError:
        raise click.ClickException(f"{endpoint} answered with something that is not JSON: {answer[:200]!r}") from None


def _fail(endpoint: str, error: urllib.error.HTTPError) -> NoReturn:
    try:
        message = json.loads(error.read())["error"]
    except (OSError, ValueError, KeyError, TypeError):
        message = error.reason
    hint = ""
    if error.code == 404:
        hint = (
            " (is SSE_PUBLISH_TOKEN set on the server, and is --url the stream's URL,"
            " such as http://localhost:5000/stream?)"
        )
    elif 300 <= error.code < 400:
        # urllib would send the Authorization header on to wherever a redirect points.
        location = error.headers.get("Location")
        hint = f" (redirects are not followed, so that the token goes nowhere else; use the URL it names: {location})"
    raise click.ClickException(f"{endpoint} answered {error.code}: {message}{hint}")
