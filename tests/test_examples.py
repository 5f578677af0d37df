"""The examples of README.md and docs/quickstart.rst, run as the pages show them.

Every code block of the two pages is taken from the page itself and run
against real servers (gunicorn's gevent worker, gevent's ``WSGIServer``, the
stream server of ``start_sse_tcp_port``), a real Redis and Debian's
Chromium. What a test changes is said where it does it: a free port for a
fixed one, a bind address for gunicorn, and, appended below the page's own
code, routes that let the test run the page's other snippets in a view or
serve a page with a snippet's script. ``test_every_block_is_run`` fails for
a block that no test runs, so a new example needs a test (or a reason in
``NOT_RUN``).
"""

from __future__ import annotations

import ast
import doctest
import json
import re
import runpy
import subprocess
import textwrap
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, url_for
from playwright.sync_api import Page

from flask_sse_stream import SSE
from tests.support.client import StreamClient
from tests.support.doc_blocks import Block, md_blocks, rst_blocks, rst_blocks_of
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ROOT, ProcessServer, free_port

README = ROOT / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.rst"
TOKEN = "examples-token-abcdefghij"

#: Per page, a marker (a piece of text) of each block that a test of this module runs.
RUN = {
    README: [
        "SSE(app)  # the stream is now at /stream",
        "source.onmessage = (event) => console.log(event.data)",
        "a_sse = make_sse()",
        "curl -sS http://localhost:5000/stream/publish",
    ],
    QUICKSTART: [
        "def index():",
        "def create_app():",
        '<ul id="log"></ul>',
        "source.onerror",
        'current_app.sse.send_new_event(data=request.form["text"])\n',
        "def clock():",
        '@app.cli.command("announce")',
        '>>> sse.send_new_event(data="live only")',
        '"sse-reset"',
        'data={"room": "lobby", "count": 3}',
        'source.addEventListener("presence"',
        'data="hi", channel="room-1"',
        'new EventSource("/stream?channel=room-1");',
        "def may_listen(channel):",
        "gunicorn -k gevent --worker-connections 2000 'app:app'",
        "WSGIServer((",
    ],
}
#: Blocks no test here runs, and why.
NOT_RUN = {
    README: {
        "pip install ./flask-sse-stream": "scripts/check-dist installs from a checkout, the wheel and the sdist",
        "scripts/example": "the developer's commands: CI runs scripts/test; test_browser runs the example app",
    },
    QUICKSTART: {
        "pip install ./flask-sse-stream": "scripts/check-dist runs pip install './flask-sse-stream[gunicorn]'",
        "scripts/check-dist": "scripts/check-dist is this block: CI runs it (.ci/run)",
    },
}


def blocks_of(page: Path) -> list[Block]:
    return md_blocks(page) if page.suffix == ".md" else rst_blocks(page)


def block(page: Path, marker: str) -> str:
    """The code of the one block of ``page`` that contains ``marker`` (one of ``RUN``)."""
    assert marker in RUN[page], f"add {marker!r} to RUN"
    (found,) = [b for b in blocks_of(page) if marker in b.code]
    return found.code


@pytest.mark.parametrize("page", [README, QUICKSTART], ids=lambda page: page.name)
def test_every_block_is_run(page: Path) -> None:
    markers = [*RUN[page], *NOT_RUN[page]]
    for found in blocks_of(page):
        claimed = [marker for marker in markers if marker in found.code]
        assert len(claimed) == 1, f"{page.name}: {found} is claimed by {claimed}: {found.code}"


def test_every_block_of_run_has_a_test() -> None:
    """Each marker of RUN is used by a ``block(...)`` call of this module, outside RUN itself."""
    calls = [
        node
        for node in ast.walk(ast.parse(Path(__file__).read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "block" and len(node.args) == 2
    ]
    used = {ast.literal_eval(call.args[1]) if not isinstance(call.args[1], ast.Name) else globals()[call.args[1].id]
            for call in calls}  # fmt: skip
    assert {marker for markers in RUN.values() for marker in markers} == used


# -- servers, pages and the browser ------------------------------------------------------


def quickstart_app() -> str:
    """The minimal application of the quickstart (``app.py``)."""
    return block(QUICKSTART, "def index():")


#: Appended below a page's app by the tests that need it: run a snippet of the
#: page in a view (``POST /test/run/NAME``); serve a page with more script
#: (``GET /test/page/NAME``); log a visitor in (``GET /test/login/ID``).
HARNESS = """

# --- Added by tests/test_examples.py, below the page's code. ---
import json as _json
import pathlib as _pathlib

from flask import render_template_string as _render_template_string
from flask import session as _session

_EXTRA = _json.loads((_pathlib.Path(__file__).parent / "extra.json").read_text())


@app.post("/test/run/<name>")
def _run_snippet(name):
    exec(_EXTRA["snippets"][name])
    return "", 204


@app.get("/test/page/<name>")
def _page(name):
    return _render_template_string(_EXTRA["pages"][name])


@app.get("/test/login/<int:user_id>")
def _login(user_id):
    _session["user_id"] = user_id
    return "", 204
"""


def write_app(
    directory: Path, code: str, snippets: dict[str, str] | None = None, pages: dict[str, str] | None = None
) -> Path:
    """``app.py`` (the page's ``code`` and the harness) and the quickstart's page as ``templates/index.html``."""
    (directory / "templates").mkdir(exist_ok=True)
    (directory / "templates" / "index.html").write_text(block(QUICKSTART, '<ul id="log"></ul>'))
    (directory / "extra.json").write_text(json.dumps({"snippets": snippets or {}, "pages": pages or {}}))
    (directory / "app.py").write_text(code + HARNESS)
    return directory


def gunicorn(directory: Path, command: str, port: int | None = None, **env: str) -> ProcessServer:
    """``command``, a gunicorn command line of a page, in ``directory``, bound to 127.0.0.1 on a free port."""
    port = port or free_port()
    args = [PYTHON, "-m", *command.split()[:-1], "-b", f"127.0.0.1:{port}", "--no-control-socket"]
    args.append(command.split()[-1].strip("'"))
    return ProcessServer(args, port, env=env, log=directory / f"gunicorn-{port}.log", cwd=directory)


def post(port: int, path: str, **form: str) -> int:
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


@pytest.fixture
def servers() -> Iterator[Callable[[ProcessServer], ProcessServer]]:
    started: list[ProcessServer] = []
    yield lambda server: started.append(server) or server  # type: ignore[func-returns-value]
    for server in started:
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., StreamClient]]:
    opened: list[StreamClient] = []

    def connect(port: int, path: str = "/stream", **kw: Any) -> StreamClient:
        client = StreamClient(port, path, **kw)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


def wait_open(page: Page, source: str = "source") -> None:
    """Until the page's EventSource (a global of its script) is open: the server subscribed it."""
    page.wait_for_function(f"() => {source}.readyState === EventSource.OPEN")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


# -- README.md ---------------------------------------------------------------------------


def test_readme_quickstart_under_gunicorn(tmp_path, servers, clients) -> None:
    (tmp_path / "app.py").write_text(block(README, "SSE(app)  # the stream is now at /stream"))
    server = servers(gunicorn(tmp_path, "gunicorn -k gevent 'app:app'"))  # "Serve it with gevent"
    before = clients(server.port)
    assert post(server.port, "/say", text="Hello from the README") == 204
    said = before.next_event()
    assert (said.data, said.id) == ("Hello from the README", 1)
    assert clients(server.port).next_event().data == "Hello from the README"  # id=True: stored, replayed


def test_readme_page_logs_each_event(tmp_path, servers, new_page) -> None:
    (tmp_path / "app.py").write_text(block(README, "SSE(app)  # the stream is now at /stream"))
    page_html = block(README, "source.onmessage = (event) => console.log(event.data)")
    # The page itself, served at / by the README's app.
    (tmp_path / "page.py").write_text(f"from app import app\n\napp.add_url_rule('/', 'page', lambda: {page_html!r})\n")
    server = servers(gunicorn(tmp_path, "gunicorn -k gevent 'page:app'"))
    page = new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    wait_open(page)
    with page.expect_console_message(lambda message: message.text == "logged in the console"):
        post(server.port, "/say", text="logged in the console")


def test_readme_walkthrough(clients) -> None:
    port = free_port()
    code = block(README, "a_sse = make_sse()").replace("8122", str(port))  # a free port
    names: dict[str, Any] = {}
    early: StreamClient | None = None
    for statement in ast.parse(code).body:
        exec(compile(ast.Module([statement], []), "README.md", "exec"), names)
        if "stop" in names and early is None:
            early = clients(port, "/")  # a page open before the events are sent
    assert early is not None
    later = clients(port, "/")  # a page opened afterwards
    assert [m.data for m in early.events(2)] == ["Hello World!", "Hello World! (again)"]
    assert later.next_event().data == "Hello World! (again)"
    names["stop"]()  # "stop() closes the server and its streams"
    early.wait_closed(timeout=2)
    later.wait_closed(timeout=2)


def test_readme_curl_publishes(tmp_path, servers, clients) -> None:
    # The quickstart's app reads FLASK_SSE_PUBLISH_TOKEN into SSE_PUBLISH_TOKEN.
    write_app(tmp_path, quickstart_app())
    server = servers(gunicorn(tmp_path, "gunicorn -k gevent 'app:app'", FLASK_SSE_PUBLISH_TOKEN=TOKEN))
    stream = clients(server.port)
    command = block(README, "curl -sS http://localhost:5000/stream/publish")
    command = command.replace("http://localhost:5000", f"http://127.0.0.1:{server.port}")  # the server's address
    done = subprocess.run(
        ["bash", "-c", command], env={"PATH": "/usr/bin:/bin", "SSE_PUBLISH_TOKEN": TOKEN},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"id": 1}\n', "")
    sent = stream.next_event()
    assert (sent.event, sent.data, sent.id) == ("deploy", "Deploy finished", 1)


# -- docs/quickstart.rst -----------------------------------------------------------------

QUICKSTART_COMMAND = "gunicorn -k gevent --worker-connections 2000 'app:app'"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessServer]:
    """The quickstart's app and page, served by its "Running it" command; the harness runs its snippets."""
    directory = tmp_path_factory.mktemp("quickstart")
    page = block(QUICKSTART, '<ul id="log"></ul>')
    presence = block(QUICKSTART, 'source.addEventListener("presence"')
    snippets = {
        "presence": block(QUICKSTART, 'data={"room": "lobby", "count": 3}'),
        "room-1": block(QUICKSTART, 'data="hi", channel="room-1"'),
        # Not the page's: an event for the second stream only.
        "news": 'current_app.sse.send_new_event(data="headline", channel="news")',
    }
    write_app(directory, quickstart_app(), snippets, {"presence": f"{page}<script>\n{presence}</script>\n"})
    assert block(QUICKSTART, QUICKSTART_COMMAND).strip() == QUICKSTART_COMMAND
    server = gunicorn(directory, QUICKSTART_COMMAND)
    yield server
    server.stop()


def test_quickstart_page_shows_what_is_said(quickstart, new_page) -> None:
    url = f"http://127.0.0.1:{quickstart.port}/"
    first = new_page()
    first.goto(url)
    wait_open(first)
    assert post(quickstart.port, "/say", text="Hello from the quickstart") == 204
    first.wait_for_function("() => document.querySelector('#log li')?.textContent === 'Hello from the quickstart'")
    later = new_page()  # id=True: a page opened afterwards shows it too
    later.goto(url)
    later.wait_for_function("() => document.querySelector('#log li')?.textContent === 'Hello from the quickstart'")


def test_quickstart_json_data_and_named_events(quickstart, new_page) -> None:
    page = new_page()
    page.goto(f"http://127.0.0.1:{quickstart.port}/test/page/presence")
    wait_open(page)
    with page.expect_console_message(lambda message: message.text == "3 in lobby"):
        post(quickstart.port, "/test/run/presence")


def test_quickstart_channels(quickstart, new_page) -> None:
    page = new_page()
    page.goto(f"http://127.0.0.1:{quickstart.port}/")
    opened = [line.rstrip(";") for line in block(QUICKSTART, 'new EventSource("/stream?channel=room-1");').split("\n")]
    page.evaluate(
        "([one, two]) => { window.streams = [eval(one), eval(two)]; window.got = [[], []];"
        " window.streams.forEach((s, n) => s.onmessage = (e) => window.got[n].push(e.data)); }",
        [line for line in opened if line],
    )
    page.wait_for_function("() => window.streams.every((s) => s.readyState === EventSource.OPEN)")
    post(quickstart.port, "/test/run/room-1")
    post(quickstart.port, "/test/run/news")
    page.wait_for_function("() => window.got[1].length === 2")
    assert page.evaluate("() => window.got") == [["hi"], ["hi", "headline"]]
    app = Flask(__name__)  # "url_for('sse.stream', channel=['room-1', 'news']) builds the second URL"
    SSE(app)
    with app.test_request_context():
        assert url_for("sse.stream", channel=["room-1", "news"]) == "/stream?channel=room-1&channel=news"


def preamble() -> str:
    """The quickstart app up to its first route: imports, app, extension."""
    return quickstart_app().split("\n@app.")[0]


def test_quickstart_factory_reads_the_redis_url_from_the_environment(tmp_path, servers, clients, redis_server):
    imports = quickstart_app().split("\n\n")[0]  # the factory's module imports what the app's does
    (tmp_path / "app.py").write_text(f"{imports}\n\n{block(QUICKSTART, 'def create_app():')}")
    env = {"FLASK_SSE_REDIS_URL": redis_server.url, "FLASK_SSE_REDIS_PREFIX": "factory"}
    server = servers(gunicorn(tmp_path, "gunicorn -k gevent 'app:create_app()'", **env))
    stream = clients(server.port)
    # Another process with the same environment: the event goes through Redis.
    sender = "from app import create_app; app = create_app(); print(app.sse.send_new_event(data='via Redis', id=True))"
    done = subprocess.run([PYTHON, "-c", sender], cwd=tmp_path, env=dict(env, PATH="/usr/bin:/bin"),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[1-9][0-9]*\n", done.stdout), done.stdout  # the id send_new_event returned
    sent = int(done.stdout)
    with redis_server.client() as client:
        assert int(client.get("{factory}:id")) == sent  # given by the Redis counter (it starts at its clock)
    assert (stream.next_event().data, stream.last_event_id) == ("via Redis", str(sent))


def test_quickstart_announce_command_reaches_the_server_through_redis(tmp_path, servers, clients, redis_server):
    announce = block(QUICKSTART, '@app.cli.command("announce")')
    write_app(tmp_path, f"{quickstart_app()}\n\n{announce}")
    env = {"FLASK_SSE_REDIS_URL": redis_server.url, "FLASK_SSE_REDIS_PREFIX": "announce"}
    server = servers(gunicorn(tmp_path, QUICKSTART_COMMAND, **env))
    stream = clients(server.port)
    done = subprocess.run(
        [PYTHON, "-m", "flask", "--app", "app", "announce", "Back in five minutes"],
        cwd=tmp_path, env=dict(env, PATH="/usr/bin:/bin"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    announced = stream.next_event()
    with redis_server.client() as client:
        given = int(client.get("{announce}:id"))  # the one id the command's process got from Redis
    assert (announced.data, announced.id) == ("Back in five minutes", given)


def test_quickstart_view_sends_live_only(tmp_path, servers, clients) -> None:
    live_view = block(QUICKSTART, 'current_app.sse.send_new_event(data=request.form["text"])\n')
    write_app(tmp_path, f"{preamble()}\n\n{live_view}")
    server = servers(gunicorn(tmp_path, QUICKSTART_COMMAND))
    open_now = clients(server.port)
    post(server.port, "/say", text="live")
    said = open_now.next_event()
    assert (said.data, said.id) == ("live", None)
    opened_later = clients(server.port)
    post(server.port, "/say", text="later")
    assert opened_later.next_event().data == "later"  # "live" was not stored


def test_quickstart_clock_thread_ticks(tmp_path, servers, clients) -> None:
    write_app(tmp_path, f"{quickstart_app()}\n\n{block(QUICKSTART, 'def clock():')}")
    server = servers(gunicorn(tmp_path, QUICKSTART_COMMAND))
    tick = clients(server.port).next_event()
    assert tick.event == "tick"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", tick.data)


def test_quickstart_live_and_stored_events_as_in_the_shell(tmp_path) -> None:
    (tmp_path / "app.py").write_text(quickstart_app())
    names = runpy.run_path(str(tmp_path / "app.py"), run_name="quickstart_app")
    try:
        session = block(QUICKSTART, '>>> sse.send_new_event(data="live only")')
        test = doctest.DocTestParser().get_doctest(session, names, "quickstart", "quickstart.rst", 0)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        runner.run(test)
        assert runner.summarize(verbose=False).failed == 0
    finally:
        names["sse"].close()


def test_quickstart_wsgiserver_script(tmp_path, servers, clients) -> None:
    write_app(tmp_path, quickstart_app())
    port = free_port()
    script = block(QUICKSTART, "WSGIServer((")
    assert '("0.0.0.0", 8000)' in script
    (tmp_path / "serve.py").write_text(script.replace('("0.0.0.0", 8000)', f'("0.0.0.0", {port})'))  # a free port
    server = servers(ProcessServer([PYTHON, "serve.py"], port, cwd=tmp_path, log=tmp_path / "serve.log"))
    stream = clients(server.port)
    assert post(server.port, "/say", text="served by WSGIServer") == 204
    assert stream.next_event().data == "served by WSGIServer"


def authorizer_of(where: str) -> str:
    if where == "quickstart":
        return block(QUICKSTART, "def may_listen(channel):")
    if where == "SSE.authorize":
        (example,) = rst_blocks_of(textwrap.dedent(SSE.authorize.__doc__ or ""))
        return f"from flask import session\n\n{example.code}"  # the docstring leaves out the import
    (example,) = [b for b in rst_blocks(ROOT / "docs" / "security.rst") if "def may_listen" in b.code]
    return example.code


def authorized_app(directory: Path, where: str, pages: dict[str, str] | None = None) -> dict[str, Any]:
    """The quickstart's app with an authorizer of the docs, in this process (its secret key set)."""
    write_app(directory, f"{quickstart_app()}\n\n{authorizer_of(where)}", pages=pages)
    names = runpy.run_path(str(directory / "app.py"), run_name=f"authorized_{directory.name}")
    names["app"].secret_key = "examples-secret-key"
    return names


def login(port: int, user_id: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/test/login/{user_id}", timeout=10) as response:
        return str(response.headers["Set-Cookie"]).split(";")[0]


@pytest.mark.parametrize("where", ["quickstart", "SSE.authorize", "security.rst"])
def test_the_documented_authorizer_keeps_anonymous_visitors_out(tmp_path, serve, clients, where) -> None:
    names = authorized_app(tmp_path, where)
    try:
        port = serve(names["app"]).port

        def status(channel: str, cookie: str | None = None) -> int:
            headers = {"Cookie": cookie} if cookie else None
            return clients(port, f"/stream?channel={channel}", headers=headers).status

        anonymous = {channel: status(channel) for channel in ("sse", "news", "user-None", "user-42")}
        assert anonymous == {"sse": 200, "news": 200, "user-None": 403, "user-42": 403}
        cookie = login(port, 42)
        assert (status("user-42", cookie), status("user-43", cookie), status("user-None", cookie)) == (200, 403, 403)
    finally:
        names["sse"].close()


def test_quickstart_onerror_sees_a_refused_stream_closed_for_good(tmp_path, serve, new_page) -> None:
    page_html = block(QUICKSTART, '<ul id="log"></ul>')
    refused = "url_for('sse.stream', channel='user-42')"  # a channel the authorizer refuses to a visitor
    handler = block(QUICKSTART, "source.onerror")
    assert "// refused:" in handler
    handler = re.sub(r"// refused:.*", "window.refused = true;", handler)  # what the page would do there
    page_html = page_html.replace("url_for('sse.stream')", refused) + f"<script>\n{handler}</script>\n"
    names = authorized_app(tmp_path, "quickstart", pages={"refused": page_html})
    try:
        port = serve(names["app"]).port
        page = new_page()
        page.goto(f"http://127.0.0.1:{port}/test/page/refused")
        page.wait_for_function("() => window.refused === true")
        assert page.evaluate("() => source.readyState") == 2  # EventSource.CLOSED: it will not retry
    finally:
        names["sse"].close()


def test_quickstart_reset_event_reloads_the_page(tmp_path, servers, new_page) -> None:
    reload = block(QUICKSTART, '"sse-reset"')
    page_html = block(QUICKSTART, '<ul id="log"></ul>') + f"<script>\n{reload}</script>\n"
    write_app(tmp_path, quickstart_app(), pages={"reset": page_html})
    port = free_port()
    first = servers(gunicorn(tmp_path, QUICKSTART_COMMAND, port=port))
    page = new_page()
    page.goto(f"http://127.0.0.1:{port}/test/page/reset")
    wait_open(page)
    post(port, "/say", text="before the restart")  # id 1: the browser will resume from it
    page.wait_for_function("() => document.querySelectorAll('#log li').length === 1")
    with page.expect_event("load", timeout=60_000):
        first.stop()
        # A new process on the same port: an empty in-process store, which never gave id 1.
        servers(gunicorn(tmp_path, QUICKSTART_COMMAND, port=port))
    wait_open(page)
    assert page.evaluate("() => document.querySelectorAll('#log li').length") == 0
