"""Sender threads: events with unique data, at a steady rate, through every path the library offers.

The paths: ``method``, ``function``, ``greenlet``, ``thread``, ``timeout``
(inside a 0.1-20 ms ``gevent.Timeout``), ``kill`` (a greenlet killed after
0.1-20 ms), ``threads`` (4-8 native OS threads sending at once), ``pool`` (a
``concurrent.futures`` pool), ``seq`` (live-only and id'd events one after
another) and ``burst`` (8-40 greenlets at once, each under its own deadline)
through the app's ``POST /checker/send`` (see ``checker.app_sends``),
and ``publish``, the library's own ``POST /stream/publish``. Each event is
recorded with the invoke and completion times of its request (and, where
the app reports them, of its own call) and its outcome: ``ok`` (with its id
and the worker's pid), ``failed`` (refused before the request was sent, or
answered with an error), or ``indeterminate`` (timed out, killed or broken
after the request was sent, or a ``ConnectionError`` that says the event may
or may not have been sent).
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
from typing import Any

from .app_sends import MANY
from .history import FAILED, INDETERMINATE, OK, Clock, Fault, Send

#: The answer gevent's pywsgi gives a request whose greenlet was killed (its ``_ERRORS[500]``), as recorded.
PYWSGI_500 = "not JSON: Internal Server Error"

PATHS = ["method", "function", "greenlet", "thread", "publish", "timeout", "kill", "threads", "pool", "seq", "burst"]
#: How often each path is drawn: the paths of several events less often, so the run's load stays near
#: one event per request.
WEIGHTS = {"threads": 0.3, "pool": 0.2, "seq": 0.3, "burst": 0.15}
#: Seconds a send request may take: past Redis's 5 s command timeout, so a stalled Redis gives an answer.
TIMEOUT = 10.0
#: The share of live-only events in a sequence, and in a request of threads or a pool.
LIVE_IN_SEQ = 0.5
LIVE_IN_THREADS = 0.2
#: Milliseconds before a ``timeout`` send's deadline fires, or a ``kill`` send's greenlet is killed:
#: drawn log-uniformly, so that many land inside the send (about a millisecond here) and some after it.
DEADLINE_MS = (0.1, 20.0)


def post(port: int, path: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any], str]:
    """POST ``body`` as JSON; the status, the JSON answer and the X-Worker header.

    ConnectionRefusedError (and OSError from connect) means nothing was sent;
    other errors are raised after the request went out.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.connect()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request("POST", path, json.dumps(body), headers)
            response = connection.getresponse()
            raw = response.read()
        except OSError as error:
            raise Indeterminate(error) from error
        except http.client.HTTPException as error:
            raise Indeterminate(error) from error
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"error": "not JSON: " + " ".join(raw[:300].decode("utf-8", "replace").split())}
        return response.status, answer, response.getheader("X-Worker", "")
    finally:
        connection.close()


class Indeterminate(Exception):
    """The request went out and no complete answer came back."""


def send_once(port: int, via: str, channel: str, data: str, token: str, with_id: bool = True) -> dict[str, Any]:
    """One send through ``via``: the fields of its record (outcome, id, pid, status, error, traceback)."""
    [fields] = send_request(port, via, channel, [(data, with_id)], token, {})
    fields.pop("call_start", None)
    fields.pop("call_end", None)
    return fields


def send_request(
    port: int, via: str, channel: str, items: list[tuple[str, bool]], token: str, extra: dict[str, Any]
) -> list[dict[str, Any]]:
    """One request through ``via`` for ``items`` (data, with_id): the fields of each one's record.

    ``call_start`` and ``call_end`` are the app's ``time.monotonic()`` around its call, where it reports them.
    """
    try:
        if via == "publish":
            [(data, with_id)] = items
            body = {"data": data, "id": with_id, "channel": channel}
            status, answer, worker = post(port, "/stream/publish", body, token)
        else:
            body = {"channel": channel, "via": via, **extra}
            if via in MANY:
                body["items"] = [{"data": data, "id": with_id} for data, with_id in items]
            else:
                [(body["data"], body["id"])] = items
            status, answer, worker = post(port, "/checker/send", body)
    except Indeterminate as error:
        why = f"{type(error.__cause__).__name__}: {error.__cause__}"
        return [{"outcome": INDETERMINATE, "error": why} for _ in items]
    except OSError as error:
        return [{"outcome": FAILED, "error": f"not sent: {type(error).__name__}: {error}"} for _ in items]
    pid = answer.get("pid") or (int(worker) if worker.isdigit() else None)
    if status == 200 and "results" in answer:
        return [_result(result, pid) for result in answer["results"]]
    if status == 200:
        return [{"status": status, "pid": pid, "outcome": OK, "id": answer.get("id")}]
    why = " ".join(str(answer.get("error")).split())  # one line: greenlet's errors span several
    outcome = INDETERMINATE if status == 503 and "may or may not" in why else FAILED
    # One record per item: a request of several that failed as a whole (a 500 from the handler) failed for each.
    fields = {"status": status, "pid": pid, "outcome": outcome, "error": why, "traceback": answer.get("traceback")}
    return [dict(fields) for _ in items]


def _result(result: dict[str, Any], pid: int | None) -> dict[str, Any]:
    fields = {key: result.get(key) for key in ("outcome", "id", "status", "error", "traceback")}
    return {**fields, "pid": pid, "call_start": result.get("start"), "call_end": result.get("end")}


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))), 3)


class Sender(threading.Thread):
    def __init__(
        self,
        name: str,
        rng: random.Random,
        port: int,
        channels: list[str],
        clock: Clock,
        token: str,
        padding: int,
        interval: float,
        paths: list[str] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.sender = name
        self.rng = rng
        self.port = port
        self.channels = channels
        self.clock = clock
        self.token = token
        self.padding = padding
        self.interval = interval
        self.paths = paths or PATHS
        self.sends: list[Send] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._n = 0

    def run(self) -> None:
        try:
            requests = 0
            while not self.stopping.wait(self.interval * self.rng.uniform(0.5, 1.5)):
                via = self.rng.choices(self.paths, [WEIGHTS.get(path, 1.0) for path in self.paths])[0]
                self._request(requests, via, self.rng.choice(self.channels))
                requests += 1
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error

    def _request(self, number: int, via: str, channel: str) -> None:
        rng = self.rng
        extra: dict[str, Any] = {}
        live = 0.0
        count = 1
        if via == "timeout":
            extra["timeout_ms"] = _log_uniform(rng, *DEADLINE_MS)
        elif via == "kill":
            extra["kill_ms"] = _log_uniform(rng, *DEADLINE_MS)
        elif via == "seq":
            count, live = rng.randint(3, 8), LIVE_IN_SEQ
        elif via == "burst":
            count = rng.randint(8, 40)
            extra["timeouts_ms"] = [_log_uniform(rng, *DEADLINE_MS) for _ in range(count)]
        elif via in MANY:
            extra["threads"] = rng.randint(4, 8)
            count, live = extra["threads"] * rng.randint(1, 2), LIVE_IN_THREADS
        numbers = list(range(self._n, self._n + count))
        self._n += count
        items = [(f"{self.sender}-{n}:" + "x" * self.padding, rng.random() >= live) for n in numbers]
        request = f"{self.sender}/{number}" if via in MANY else None
        invoke = self.clock()
        results = send_request(self.port, via, channel, items, self.token, extra)
        complete = self.clock()
        for n, (data, with_id), fields in zip(numbers, items, results, strict=True):
            start, end = fields.pop("call_start", None), fields.pop("call_end", None)
            record = Send(self.sender, n, via, channel, data, with_id, invoke, complete, **fields, request=request)
            if start is not None and end is not None:
                record.call_start, record.call_end = self.clock.of(start), self.clock.of(end)
            self.sends.append(record)


def killed_at_graceful_timeout(sends: list[Send], faults: list[Fault]) -> None:
    """Sends answered ``500 Internal Server Error`` by gevent's pywsgi handler while a worker was stopping are
    indeterminate (no longer failed): gunicorn kills a request that outlives ``--graceful-timeout``, and
    pywsgi (under GeventWebSocketWorker) answers it so, where ``-k gevent`` closes the connection. The send
    may have been made (a script sent to a stalled Redis runs when it resumes), and nothing of the app ran
    to say which worker it was (no ``X-Worker``)."""
    for send in sends:
        if send.status != 500 or send.error != PYWSGI_500:
            continue
        if any(fault.stopped_pids and fault.start <= send.complete and send.invoke <= fault.end for fault in faults):
            send.outcome, send.status = INDETERMINATE, None
            send.error = "killed at the graceful timeout of a stopping worker (pywsgi answered 500)"
