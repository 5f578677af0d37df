"""What the documentation quotes of the library is what the library says."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask

import flask_sse_stream
from flask_sse_stream import SSE
from flask_sse_stream.gunicorn_worker import warn_if_in_process
from tests.support.doc_blocks import rst_blocks
from tests.support.servers import ROOT


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
