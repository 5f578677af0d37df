"""What the documentation quotes of the library is what the library says."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import urllib.request
from typing import Any

from flask import Flask, session, url_for

import flask_sse_stream
from flask_sse_stream import SSE
from flask_sse_stream.gunicorn_worker import warn_if_in_process
from tests.support.doc_blocks import rst_blocks
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ROOT


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_several_workers_warning_is_quoted_as_logged(caplog) -> None:
    (quoted,) = [b for b in rst_blocks(ROOT / "docs" / "guarantees.rst") if "SSE_REDIS_URL is not set" in b.code]
    app = Flask(__name__)  # kept: the extension holds its apps weakly
    sse = SSE(app)
    try:
        with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
            warn_if_in_process("gunicorn runs 4 workers")
    finally:
        sse.close()
    # One line per app of the process not warned about yet: this one's, and maybe other tests'.
    logged = {words(r.getMessage()) for r in caplog.records if "SSE_REDIS_URL is not set" in r.getMessage()}
    assert logged == {words(quoted.code)}


def test_a_second_sse_keeps_the_public_ids_apart_as_security_rst_shows(serve, client_for) -> None:
    (recipe,) = [b for b in rst_blocks(ROOT / "docs" / "security.rst") if "DispatcherMiddleware" in b.code]
    page: dict[str, Any] = {"__name__": "app"}
    exec(compile(recipe.code, f"security.rst, {recipe}", "exec"), page)
    sse, public_sse = page["sse"], page["public_sse"]
    try:
        port = serve(page["app"]).port
        public = client_for(port, "/public/stream")
        private = client_for(port, "/stream?channel=user-42")
        assert (public.status, private.status) == (200, 200)
        assert public_sse.send_new_event(data="status ok", id=True) == 1
        for n in range(5):
            sse.send_new_event(data=f"invoice {n}", id=True, channel="user-42")
        assert public_sse.send_new_event(data="status still ok", id=True) == 2
        assert [(m.id, m.data) for m in public.events(2)] == [(1, "status ok"), (2, "status still ok")]
        assert [m.id for m in private.events(5)] == [1, 2, 3, 4, 5]
    finally:
        sse.close()
        public_sse.close()


def test_the_wheel_the_install_section_names_is_this_version() -> None:
    text = (ROOT / "docs" / "quickstart.rst").read_text(encoding="utf-8")
    named = set(re.findall(r"flask_sse_stream-([0-9][^-]*)-py3-none-any\.whl", text))
    assert named == {flask_sse_stream.__version__}


# -- docs/apps.rst and docs/tasks.rst ----------------------------------------------------


def page_block(page: str, marker: str) -> str:
    (found,) = [b for b in rst_blocks(ROOT / "docs" / page) if marker in b.code]
    return found.code


def test_the_stream_under_your_own_prefix_as_apps_rst_shows() -> None:
    app = Flask(__name__)
    names = {"app": app, "SSE": SSE}
    exec(page_block("apps.rst", 'SSE_URL_PREFIX"] = "/api/v1/events"'), names)
    with app.test_request_context():
        assert url_for("sse.stream", channel="news") == "/api/v1/events?channel=news"


def test_the_app_hook_of_apps_rst_guards_the_stream(serve, client_for) -> None:
    app = Flask(__name__)
    app.secret_key = "apps-rst-secret"
    sse = SSE(app, publish_token="apps-rst-token-0123456789")

    @app.get("/login")
    def log_in() -> str:
        session["user_id"] = 7
        return "in"

    exec(page_block("apps.rst", "def streams_for_members_only"), {"app": app})
    try:
        port = serve(app).port
        assert client_for(port).status == 403
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as answer:
            cookie = answer.headers["Set-Cookie"].split(";")[0]
        assert client_for(port, headers={"Cookie": cookie}).status == 200
        # Only the stream: the publish endpoint answers as before (its own 401).
        assert client_for(port, "/stream/publish", method="POST").status == 401
    finally:
        sse.close()


def test_the_rq_job_of_tasks_rst_reaches_a_stream_through_redis(tmp_path, client_for) -> None:
    """The job function of tasks.rst, in a process of its own, as an RQ worker runs it (without RQ)."""
    from tests.test_examples import QUICKSTART, block, gunicorn

    imports = block(QUICKSTART, "def index():").split("\n\n")[0]
    (tmp_path / "app.py").write_text(f"{imports}\n\n{block(QUICKSTART, 'def create_app():')}")
    (tmp_path / "jobs.py").write_text(page_block("tasks.rst", "# jobs.py"))
    redis = RedisServer(tmp_path)
    env = {"FLASK_SSE_REDIS_URL": redis.url}
    server = gunicorn(tmp_path, "gunicorn -k gevent 'app:create_app()'", **env)
    try:
        stream = client_for(server.port, "/stream?channel=job-42")
        worker = subprocess.run(
            [PYTHON, "-c", "import jobs; jobs.build_report(42)"],
            cwd=tmp_path, env=dict(env, PATH="/usr/bin:/bin"), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr
        done = stream.next_event()
        assert (done.event, json.loads(done.data)) == ("job", {"job": 42, "state": "done"})
        # id=True: the id the Redis counter gave (it starts at Redis's clock, not at 1), and stored:
        # a page opened later gets the event too, with that id.
        with redis.client() as client:
            assert done.id == int(client.get("{sse}:id")), (done.id, client.get("{sse}:id"))
        later = client_for(server.port, "/stream?channel=job-42").next_event()
        assert (later.event, later.data, later.id) == (done.event, done.data, done.id)
    finally:
        server.stop()
        redis.stop()
