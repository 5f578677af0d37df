"""bench_app under tracemalloc, for bench/capacity.py --tracemalloc: GET /snapshot?to=<path> dumps a snapshot.

tracemalloc starts when the worker imports this module (gunicorn without
--preload: in the worker), keeping 8 frames per allocation. The snapshot
runs ``gc.collect()`` first, so that it holds what the open streams keep.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

tracemalloc.start(8)

from bench_app import app as flask_app  # noqa: E402


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/snapshot":
        gc.collect()
        tracemalloc.take_snapshot().dump(parse_qs(environ["QUERY_STRING"])["to"][0])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    return flask_app(environ, start_response)  # type: ignore[no-any-return]
