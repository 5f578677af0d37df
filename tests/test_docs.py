"""What the documentation quotes of the library is what the library says."""

from __future__ import annotations

import logging

from flask import Flask

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
