"""The app's own access control and its self-report: an authorizer, a revocation list, a hub sampler.

The authorizer admits a stream with ``Admission(subject, expires_at)`` from
the query the client sends (``subject``, ``expires``: a ``time.monotonic()``
of the host, ``delay``: seconds the authorizer takes). It reads the
revocations first and then takes its delay, as an authorizer that looked a
session up in a slow store would: a revocation made meanwhile is not seen,
and the library must end such a stream as it opens. When it began is sent
back in the ``X-Auth-Start`` header (the checker places the stream's
authorization against the endings with it).

The revocations are a file in the run's directory (``CHECKER_DIR``), one
subject a line: shared by every worker and by a restarted server, and
untouched by the faults done to Redis.

The hub sampler writes, when the process starts, every ``HUB_INTERVAL``
seconds and whenever the checker asks (a new phase name in
``sample-request``), the gevent hubs the process holds (``gc`` over
``gevent.hub.Hub``) to ``hubs-<pid>.jsonl``.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.hub
from flask import g, request

from flask_sse_stream import Admission

#: Seconds between two hub samples when nobody asks (a gc walk costs ~25 ms in a worker).
HUB_INTERVAL = 5.0
#: Seconds between two looks at ``sample-request``.
ASKED_EVERY = 0.1
REVOKED = "revoked"
REQUEST = "sample-request"


def revoke(directory: Path, subject: str) -> None:
    """Add ``subject`` to the revocations (one ``write`` with O_APPEND: whole lines, whoever writes)."""
    descriptor = os.open(directory / REVOKED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (subject + "\n").encode())
    finally:
        os.close(descriptor)


def revoked(directory: Path) -> set[str]:
    try:
        return set((directory / REVOKED).read_text().splitlines())
    except FileNotFoundError:
        return set()


def authorizer(directory: Path | None) -> Any:
    def admit(channel: str) -> object:
        args = request.args
        subject = args.get("subject")
        if "auth_start" not in g:  # once per stream, whatever its number of channels
            g.auth_start = time.monotonic()
            g.refused = subject is not None and directory is not None and subject in revoked(directory)
            delay = float(args.get("delay", 0))
            if delay > 0:
                time.sleep(delay)  # monkey-patched: the worker's other greenlets go on
        if g.refused:
            return False
        expires = args.get("expires")
        if subject is None and expires is None:
            return True
        expires_at = None if expires is None else time.time() + float(expires) - time.monotonic()
        return Admission(subject=subject, expires_at=expires_at)

    return admit


def count_hubs() -> int:
    return sum(1 for thing in gc.get_objects() if isinstance(thing, gevent.hub.Hub))


def sample_hubs(directory: Path) -> None:
    """Forever, in a greenlet: the hubs of this process, to ``hubs-<pid>.jsonl``."""
    path = directory / f"hubs-{os.getpid()}.jsonl"
    asked = directory / REQUEST
    done_phase = _read(asked)
    last = 0.0
    while True:
        phase = _read(asked)
        now = time.monotonic()
        if phase != done_phase or now - last >= HUB_INTERVAL:
            if phase != done_phase:
                gc.collect()  # a hub that nothing holds any more is not counted
            record = {"t": time.monotonic(), "pid": os.getpid(), "phase": phase or "run", "hubs": count_hubs()}
            with path.open("a") as out:
                out.write(json.dumps(record) + "\n")
            done_phase, last = phase, now
        gevent.sleep(ASKED_EVERY)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
