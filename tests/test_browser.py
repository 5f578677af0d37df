"""The example app in a real browser: Debian's headless Chromium, driven by Playwright.

- The seed's walkthrough (SPEC 7), typed at the prompt of ``python -m example_app``.
- The browser reconnects by itself, with ``Last-Event-ID``, to a stream server
  that stopped and started again (``tests/apps/reconnect.py``).
- The gunicorn form, ``example_app:create_app()`` with four workers and Redis:
  an event sent from one page's form reaches every page, whichever worker
  serves its stream.
- ``EventSource(url, {withCredentials: true})`` from an origin listed in
  ``SSE_CORS_ORIGINS`` connects; from another it is refused.

Every server is a real process on a free port, stopped by process id; every
page has a browser context (and so connections) of its own.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Request, expect

from tests.support import browser as chromium
from tests.support.browser import load, received, wait_open, wait_received
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ROOT, ProcessServer, free_port, stop_process_group, wait_for_port
from tests.support.waiting import wait_until

HOST = "127.0.0.1"
#: Where a person finds the walkthrough's screenshot (git-ignored).
SCREENSHOT = ROOT / "test-output" / "walkthrough.png"
expect.set_options(timeout=chromium.TIMEOUT)


class Prompt:
    """``python -m MODULE ARGS`` with its stdin a pipe: a person typing at its prompt.

    Its output is kept (``output``) and can be read line by line (``read_line``).
    """

    def __init__(self, module: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-m", module, *args],
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line.rstrip("\n"))

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def read_line(self, timeout: float = 10.0) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line in {timeout} s; the output so far: {''.join(self.output)!r}") from None

    def ask(self, command: str) -> str:
        """Type ``command`` and read the one line that answers it."""
        self.type(command)
        return self.read_line()

    def stop(self) -> None:
        stop_process_group(self.process)
        self._reader.join(5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass


@pytest.fixture
def prompt() -> Iterator[Callable[..., Prompt]]:
    """``prompt(module, *args)``: a :class:`Prompt`, stopped after the test if it still runs."""
    started: list[Prompt] = []

    def start(module: str, *args: str) -> Prompt:
        started.append(Prompt(module, *args))
        return started[-1]

    yield start
    for program in started:
        program.stop()


@pytest.fixture
def serve_example(tmp_path: Path) -> Iterator[Callable[..., ProcessServer]]:
    """``serve_example(workers, port=None, **env)``: gunicorn with ``example_app/gunicorn.conf.py``.

    On ``port`` or a free one; ``env`` adds environment variables (``SSE_REDIS_URL``, say).
    """
    servers: list[ProcessServer] = []

    def serve(workers: int, port: int | None = None, **env: str) -> ProcessServer:
        port = port or free_port()
        command = [
            PYTHON, "-m", "gunicorn", "-c", "example_app/gunicorn.conf.py", "-w", str(workers),
            "--no-control-socket", "example_app:create_app()",
        ]  # fmt: skip
        log = tmp_path / f"gunicorn-{len(servers)}.log"
        servers.append(ProcessServer(command, port, env={"BIND": f"{HOST}:{port}", **env}, log=log))
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def post(port: int, path: str, **form: str) -> Any:
    body = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", data=body, timeout=10) as response:
        return json.load(response)


def textarea(page: Page) -> Locator:
    return page.locator("#events")


def test_walkthrough_typed_at_the_prompt(
    prompt: Callable[..., Prompt], new_page: Callable[[], Page], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page_port, stream_port = free_port(), free_port()
    example = prompt("example_app", "--host", HOST, "--page-port", str(page_port), "--stream-port", str(stream_port))
    wait_for_port(page_port, process=example.process)
    wait_for_port(stream_port, process=example.process)
    url = f"http://{HOST}:{page_port}/"

    # Every page below loads and connects while the program waits, silent, at
    # its prompt: both servers serve from their own threads meanwhile.
    first, second = load(new_page(), url), load(new_page(), url)
    assert first.title() == "flask_sse_stream example"
    expect(first.locator("h1")).to_have_text("Welcome to the server-sent events example")
    expect(textarea(first)).to_have_attribute("readonly", "")
    assert first.evaluate("window.source.url") == f"http://{HOST}:{stream_port}/"

    example.type("Hello World!")
    for page in (first, second):
        expect(textarea(page)).to_have_value("Hello World!\n")
    later = load(new_page(), url)
    expect(textarea(later)).to_have_value("")

    example.type("!id Hello World! (again)")
    for page in (first, second):
        expect(textarea(page)).to_have_value("Hello World! (again)\nHello World!\n")
    expect(textarea(later)).to_have_value("Hello World! (again)\n")
    last = load(new_page(), url)
    expect(textarea(last)).to_have_value("Hello World! (again)\n")
    for page in (first, second, later, last):
        assert page.evaluate("window.opens") == 1, "a stream was interrupted"

    shot = tmp_path / "walkthrough.png"
    first.screenshot(path=shot)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    with capsys.disabled():
        print(f"\nthe walkthrough's screenshot: {SCREENSHOT} (and {shot})")

    started = time.monotonic()
    example.type("!quit")
    assert example.process.wait(10) == 0
    assert time.monotonic() - started < 5
    output = "".join(example.output)
    assert "sent with id 1" in output
    assert "Traceback" not in output, output


def test_browser_reconnects_by_itself_with_last_event_id(
    prompt: Callable[..., Prompt], new_page: Callable[[], Page]
) -> None:
    page_port, stream_port = free_port(), free_port()
    app = prompt("tests.apps.reconnect", str(page_port), str(stream_port))
    assert app.read_line() == "ready"
    page = new_page()
    stream_url = f"http://{HOST}:{stream_port}/"
    requests: list[Request] = []  # for the stream
    page.on("request", lambda request: requests.append(request) if request.url == stream_url else None)
    load(page, f"http://{HOST}:{page_port}/")

    assert app.ask("retry 100") == "ok"  # the browser comes back after 100 ms
    assert app.ask("send-id one") == "ok 1"
    assert app.ask("send-id two") == "ok 2"
    wait_received(page, 2)

    assert app.ask("stop") == "ok"
    # The stream ends (an error event), then a reconnection is refused (another).
    page.wait_for_function("() => window.errors >= 2 && window.source.readyState === EventSource.CONNECTING")
    assert app.ask("send-id three") == "ok 3"
    assert app.ask("send nobody hears this") == "ok"
    assert app.ask("send-id four") == "ok 4"
    assert app.ask("start") == "ok"
    wait_open(page)
    wait_received(page, 4)
    assert app.ask("send-id five") == "ok 5"

    events = [(event["lastEventId"], event["data"]) for event in wait_received(page, 5)]
    assert events == [("1", "one"), ("2", "two"), ("3", "three"), ("4", "four"), ("5", "five")]
    expect(textarea(page)).to_have_value("five\nfour\nthree\ntwo\none\n")
    assert page.evaluate("window.opens") == 2
    # The first request had no Last-Event-ID; after at least one refused
    # attempt, the one that reached the server again sent "2" by itself.
    assert len(requests) >= 3
    assert requests[0].all_headers().get("last-event-id") is None
    assert requests[-1].all_headers().get("last-event-id") == "2"
    app.type("quit")
    assert app.process.wait(10) == 0


def test_form_event_reaches_every_page_of_every_worker(
    redis_server: RedisServer, serve_example: Callable[..., ProcessServer], new_page: Callable[[], Page]
) -> None:
    server = serve_example(4, SSE_REDIS_URL=redis_server.url)
    url = f"http://{HOST}:{server.port}/?channel=room"
    pages: list[Page] = []
    workers: list[str] = []  # the worker that serves each page's stream
    while len(pages) < 6 or len(set(workers)) < 2:
        assert len(pages) < 30, f"30 pages, all of their streams served by worker {workers[0]}"
        page = new_page()
        with page.expect_response(lambda response: "/stream" in response.url) as stream:
            # The first page listens for "greeting" once it sends one; the others from the start.
            load(page, url + ("&event=greeting" if pages else ""))
        workers.append(stream.value.headers["x-worker"])
        pages.append(page)
    lobby = load(new_page(), f"http://{HOST}:{server.port}/?channel=lobby")

    sender = pages[0]
    sender.fill("input[name=data]", "Hello from the form")
    sender.fill("input[name=event]", "greeting")
    expect(sender.locator("input[name=channel]")).to_have_value("room")
    sender.check("input[name=id]")
    sender.click("button")
    expect(sender.locator("#result")).to_have_text(re.compile(r"sent with id \d+"))
    sent_id = sender.locator("#result").inner_text().rsplit(" ", 1)[1]
    # A second event, sent after it, marks the end: a copy of the first would come before it.
    post(server.port, "/send", data="end", channel="room")

    for page in pages:
        assert wait_received(page, 2) == [
            {"type": "greeting", "lastEventId": sent_id, "data": "Hello from the form"},
            {"type": "message", "lastEventId": sent_id, "data": "end"},
        ]
        expect(textarea(page)).to_have_value("end\ngreeting: Hello from the form\n")
    post(server.port, "/send", data="lobby only", channel="lobby")
    assert [event["data"] for event in wait_received(lobby, 1)] == ["lobby only"]
    assert "SSE_REDIS_URL is not set" not in server.output


def test_gunicorn_config_logs_the_library_with_time_level_and_pid(serve_example: Callable[..., ProcessServer]) -> None:
    # Without SSE_REDIS_URL, each of several workers warns (the library's warning).
    server = serve_example(2)
    warning = re.compile(r"^\[[^]]+\] \[(\d+)\] \[WARNING\] flask_sse_stream: .*SSE_REDIS_URL is not set", re.M)
    wait_until(lambda: len(set(warning.findall(server.output))) == 2, what=f"two workers warn in {server.log_path}")


@contextmanager
def static_site(html: str) -> Iterator[str]:
    """``html`` at ``/`` of a new origin (``http://127.0.0.1:PORT``), served from a thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()
        thread.join(5)


CROSS_ORIGIN_PAGE = """<!doctype html>
<title>another origin</title>
<script>
  window.received = [];
  window.opens = 0;
  window.errors = 0;
  const source = new EventSource(STREAM_URL, {withCredentials: true});
  window.source = source;
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  source.onmessage = (event) => {
    window.received.push({type: event.type, lastEventId: event.lastEventId, data: event.data});
  };
</script>
"""


def test_credentialed_stream_only_from_a_listed_origin(
    serve_example: Callable[..., ProcessServer], new_page: Callable[[], Page]
) -> None:
    stream_port = free_port()
    html = CROSS_ORIGIN_PAGE.replace("STREAM_URL", json.dumps(f"http://{HOST}:{stream_port}/stream"))
    # Two origins that differ by port; the stream allows the first only.
    with static_site(html) as listed, static_site(html) as unlisted:
        serve_example(1, port=stream_port, SSE_CORS_ORIGINS=json.dumps([listed]))
        allowed = new_page()
        allowed.goto(listed + "/")
        wait_open(allowed)
        assert allowed.evaluate("window.source.withCredentials") is True
        refused = new_page()
        refused.goto(unlisted + "/")
        refused.wait_for_function("() => window.errors > 0 && window.source.readyState === EventSource.CLOSED")

        post(stream_port, "/send", data="across origins")
        assert [event["data"] for event in wait_received(allowed, 1)] == ["across origins"]
        assert received(refused) == []
        assert refused.evaluate("[window.opens, window.source.readyState]") == [0, 2]
