"""Flask-SSE compatibility: ``SSE.publish`` and ``flask_sse_stream.compat.sse``."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, abort, request, url_for

from flask_sse_stream import SSE, PublishIdWarning
from flask_sse_stream.compat import ServerSentEventsBlueprint
from flask_sse_stream.core import core_of
from tests.support.redis_server import RedisServer
from tests.support.streams import until_end

#: Flask-SSE 1.0's quickstart (docs/quickstart.rst), as published.
QUICKSTART = """\
from flask import Flask, render_template
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = "redis://localhost"
app.register_blueprint(sse, url_prefix='/stream')

@app.route('/')
def index():
    return render_template("index.html")

@app.route('/hello')
def publish_hello():
    sse.publish({"message": "Hello!"}, type='greeting')
    return "Message sent!"
"""

#: Flask-SSE 1.0's README on PyPI, as published.
PYPI_README = """\
from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = "redis://localhost"
app.register_blueprint(sse, url_prefix='/stream')

@app.route('/send')
def send_message():
    sse.publish({"message": "Hello!"}, type='greeting')
    return "Message sent!"
"""

#: Flask-SSE's page for the quickstart (its templates/index.html, shortened).
INDEX_HTML = """\
<!DOCTYPE html>
<html><body><script>
  var source = new EventSource("{{ url_for('sse.stream') }}");
  source.addEventListener('greeting', function(event) { console.log(JSON.parse(event.data)); }, false);
</script></body></html>
"""


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def load_module(directory: Path, source: str) -> Any:
    """``source`` as a module of its own file in ``directory`` (so Flask finds its templates there)."""
    name = f"flask_sse_example_{uuid.uuid4().hex[:8]}"
    path = directory / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.read().decode()


# -- the example ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "example, page, send", [(QUICKSTART, "/", "/hello"), (PYPI_README, None, "/send")], ids=["quickstart", "readme"]
)
def test_the_flask_sse_example_runs_with_only_its_import_changed(
    tmp_path, redis_server, serve, client_for, example: str, page: str | None, send: str
) -> None:
    source = example.replace("from flask_sse import sse", "from flask_sse_stream.compat import sse")
    assert source.count("\n") == example.count("\n") and source != example
    # The test's private Redis instead of one on localhost:6379.
    source = source.replace('"redis://localhost"', repr(redis_server.url))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "index.html").write_text(INDEX_HTML)
    module = load_module(tmp_path, source)
    try:
        port = serve(module.app).port
        if page is not None:
            assert get(port, page) == (200, INDEX_HTML.replace("{{ url_for('sse.stream') }}", "/stream").rstrip("\n"))
        client = client_for(port, "/stream")
        assert client.status == 200
        assert get(port, send) == (200, "Message sent!")
        message = client.next_event()
        assert message.event == "greeting"
        assert json.loads(message.data) == {"message": "Hello!"}
        assert module.app.config["SSE_REDIS_URL"] == redis_server.url  # it runs on Redis, as Flask-SSE did
    finally:
        del sys.modules[module.__name__]


# -- registering the blueprint ----------------------------------------------------------


def test_the_url_prefix_of_register_blueprint_is_where_the_stream_is(serve, client_for) -> None:
    app = Flask(__name__)
    blueprint = ServerSentEventsBlueprint()
    app.register_blueprint(blueprint, url_prefix="/events")
    assert app.config["SSE_URL_PREFIX"] == "/events"
    port = serve(app).port
    assert client_for(port, "/events").status == 200
    assert client_for(port, "/stream").status == 404
    with app.test_request_context():
        assert url_for("sse.stream", channel="news") == "/events?channel=news"


def test_without_a_url_prefix_the_stream_is_at_the_configured_prefix() -> None:
    app = Flask(__name__)
    app.register_blueprint(ServerSentEventsBlueprint())
    assert app.config["SSE_URL_PREFIX"] == "/stream"


def test_redis_url_is_read_from_sse_redis_url_then_redis_url() -> None:
    only_redis_url, both, neither = Flask("a"), Flask("b"), Flask("c")
    only_redis_url.config["REDIS_URL"] = "redis://127.0.0.1:1/1"
    both.config.update(REDIS_URL="redis://127.0.0.1:1/1", SSE_REDIS_URL="redis://127.0.0.1:1/2")
    blueprint = ServerSentEventsBlueprint()
    for app in (only_redis_url, both, neither):
        app.register_blueprint(blueprint, url_prefix="/stream")
    assert only_redis_url.config["SSE_REDIS_URL"] == "redis://127.0.0.1:1/1"
    assert both.config["SSE_REDIS_URL"] == "redis://127.0.0.1:1/2"
    assert neither.config["SSE_REDIS_URL"] is None  # the in-process store
    blueprint.extension.close()


def guarded_app() -> tuple[Flask, ServerSentEventsBlueprint]:
    """An app with Flask-SSE's blueprint, guarded as Flask-SSE documents: no stream of "analytics"."""
    blueprint = ServerSentEventsBlueprint()

    @blueprint.before_request
    def check_access() -> None:  # Flask-SSE's documented access control
        if request.args.get("channel") == "analytics":
            abort(403)

    app = Flask(__name__)
    app.register_blueprint(blueprint, url_prefix="/stream")
    return app, blueprint


def test_before_request_functions_of_the_blueprint_guard_the_stream(serve, client_for) -> None:
    app, _ = guarded_app()
    port = serve(app).port
    assert client_for(port, "/stream?channel=analytics").status == 403
    assert client_for(port, "/stream?channel=news").status == 200


#: Query strings that try to get a stream of "analytics" past a guard reading request.args.get("channel").
GUARD_TRICKS = [
    "channel=news&channel=analytics",  # a repeat: the guard sees only the first
    "channel=analytics&channel=news",
    "channel=news&channel=news",
    "channel=analytic%73",  # percent-encoding, of the value and of the name
    "chann%65l=analytics",
    "channel=news&chann%65l=analytics",
    "chann%65l=news&channel=analytics",
    "Channel=analytics",  # case
    "channel=Analytics",
    "CHANNEL=news&channel=analytics",
    "channel=news;channel=analytics",  # ; as a separator
    "channel=news%3Bchannel=analytics",
    "channel=news&channel=analytics;",
    "channel=analytics+",  # + as a space
    "channel+=analytics",
    "channel=news&channel+=analytics",
    "channel=news&channel=%20analytics",
    "channel=news%26channel=analytics",
    "channel=news&&channel=analytics",
    "channel=news&channel",
    "channel&channel=analytics",
]


@pytest.mark.parametrize("query", GUARD_TRICKS)
def test_the_documented_guard_holds_against_every_parameter_trick(serve, client_for, query: str) -> None:
    app, blueprint = guarded_app()
    with app.app_context():
        blueprint.publish("secret", channel="analytics", id=True)
    port = serve(app).port
    client = client_for(port, f"/stream?{query}")
    if client.status == 200:
        # The stream replays what it holds in its first write: never the secret.
        assert b"secret" not in client.next_chunk(), query
    else:
        assert client.status in (400, 403), query
        assert b"secret" not in client.body()


@pytest.mark.parametrize("query", ["channel=news&channel=analytics", "channel=news&channel=news"])
def test_the_compat_stream_takes_exactly_one_channel_as_flask_sse_did(serve, client_for, query: str) -> None:
    app = Flask(__name__)
    app.register_blueprint(ServerSentEventsBlueprint(), url_prefix="/stream")
    client = client_for(serve(app).port, f"/stream?{query}")
    assert client.status == 400
    assert b"one channel parameter" in client.body()


@pytest.mark.parametrize("hook", ["before_request", "after_request", "teardown_request", "before_app_request"])
def test_adding_a_hook_after_registering_raises_as_a_flask_blueprint_does(hook: str) -> None:
    blueprint = ServerSentEventsBlueprint()
    Flask(__name__).register_blueprint(blueprint, url_prefix="/stream")
    with pytest.raises(AssertionError, match="already been registered"):
        getattr(blueprint, hook)(lambda *args: None)


def test_app_wide_hooks_and_error_handlers_of_the_blueprint_apply(serve, client_for) -> None:
    blueprint = ServerSentEventsBlueprint()
    seen: list[str] = []

    @blueprint.before_app_request
    def everywhere() -> None:
        seen.append(request.path)

    @blueprint.errorhandler(403)
    def refused(error: Any) -> tuple[str, int]:
        return "not for you", 403

    @blueprint.before_request
    def check_access() -> None:
        if request.args.get("channel") == "analytics":
            abort(403)

    app = Flask(__name__)
    app.register_blueprint(blueprint, url_prefix="/stream")
    port = serve(app).port
    refused_client = client_for(port, "/stream?channel=analytics")
    assert (refused_client.status, refused_client.body()) == (403, b"not for you")
    assert client_for(port, "/stream?channel=news").status == 200
    assert seen == ["/stream", "/stream"]


def test_registering_with_other_options_or_twice_is_an_error() -> None:
    app = Flask(__name__)
    with pytest.raises(ValueError, match="subdomain"):
        app.register_blueprint(ServerSentEventsBlueprint(), url_prefix="/stream", subdomain="events")
    blueprint = ServerSentEventsBlueprint()
    app.register_blueprint(blueprint, url_prefix="/stream")
    with pytest.raises(RuntimeError, match="already registered"):
        app.register_blueprint(blueprint, url_prefix="/stream")


# -- publish ----------------------------------------------------------------------------


@pytest.fixture(params=["SSE.publish", "compat.sse.publish"])
def publisher(request, make_app, serve, client_for) -> tuple[Any, SSE, Any]:
    """(the object whose publish is tested, its SSE, a stream client of the default channel)."""
    if request.param == "SSE.publish":
        app, sse = make_app()
        target: Any = sse
    else:
        app = Flask(__name__)
        target = ServerSentEventsBlueprint()
        app.register_blueprint(target, url_prefix="/stream")
        sse = target.extension
    return target, sse, client_for(serve(app).port)


def test_publish_sends_type_as_the_event_name_and_is_live_only_by_default(publisher) -> None:
    target, sse, client = publisher
    assert target.publish({"message": "Hello!"}, type="greeting") is None
    message = client.next_event()
    assert (message.event, json.loads(message.data), message.id) == ("greeting", {"message": "Hello!"}, None)
    assert sse.messages == {}


def test_publish_with_id_true_stores_and_returns_the_next_id(publisher) -> None:
    target, sse, client = publisher
    assert target.publish("first", id=True) == 1
    assert target.publish("second", id=True, retry=2500, channel="sse") == 2
    assert [(m.data, m.id) for m in client.events(2)] == [("first", 1), ("second", 2)]
    assert client.retry == 2500
    assert list(sse.messages) == [1, 2]


def test_publish_to_a_channel_reaches_only_that_channel(publisher) -> None:
    target, sse, client = publisher
    target.publish("elsewhere", channel="other")
    assert until_end(client, sse) == []


def test_a_flask_sse_style_id_is_not_sent_and_warns(publisher) -> None:
    target, sse, client = publisher
    with pytest.warns(PublishIdWarning, match=r"id='msg-42' is not sent, it gets the next id and is stored") as w:
        assert target.publish("with a chosen id", id="msg-42") == 1
    assert w[0].filename == __file__  # the warning points at the caller
    with pytest.warns(PublishIdWarning, match="it is sent live only"):
        assert target.publish("falsy id", id="") is None
    received = client.events(2)
    assert [(m.data, m.id) for m in received] == [("with a chosen id", 1), ("falsy id", None)]
    assert received[0].last_event_id == "1"


def test_publish_checks_its_arguments_as_send_new_event_does(publisher) -> None:
    target, sse, client = publisher
    with pytest.raises(ValueError, match="event must be a non-empty str"):
        target.publish("x", type="a\nb")
    with pytest.raises(ValueError, match="retry must be a positive int"):
        target.publish("x", retry=0)
    with pytest.raises(ValueError, match="channel must be 1 to 200 characters"):
        target.publish("x", channel="")
    assert sse.stats["events_sent"] == 0


def test_compat_publish_outside_an_app_context_needs_one_when_on_several_apps() -> None:
    blueprint = ServerSentEventsBlueprint()
    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        app.register_blueprint(blueprint, url_prefix="/stream")
    with pytest.raises(RuntimeError, match="app context"):
        blueprint.publish("x")
    with second.app_context():
        assert blueprint.publish("x", id=True) == 1
    assert core_of(first).history("sse") == {}
