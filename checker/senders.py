"""Sender threads: id'd events with unique data, at a steady rate, through every path the library offers.

The paths: ``method``, ``function``, ``greenlet`` and ``thread`` through the
app's ``POST /checker/send``, and ``publish``, the library's own
``POST /stream/publish``. Each send is recorded with its invoke and
completion times and its outcome: ``ok`` (with its id and the worker's pid),
``failed`` (refused before the request was sent, or answered with an error),
or ``indeterminate`` (timed out or broken after the request was sent: it may
or may not have happened).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections.abc import Callable
from typing import Any

from .history import FAILED, INDETERMINATE, OK, Send

PATHS = ["method", "function", "greenlet", "thread", "publish"]
TIMEOUT = 3.0


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
    try:
        if via == "publish":
            status, answer, worker = post(
                port, "/stream/publish", {"data": data, "id": with_id, "channel": channel}, token
            )
        else:
            status, answer, worker = post(
                port, "/checker/send", {"data": data, "id": with_id, "channel": channel, "via": via}
            )
    except Indeterminate as error:
        return {"outcome": INDETERMINATE, "error": f"{type(error.__cause__).__name__}: {error.__cause__}"}
    except OSError as error:
        return {"outcome": FAILED, "error": f"not sent: {type(error).__name__}: {error}"}
    pid = answer.get("pid") or (int(worker) if worker.isdigit() else None)
    fields: dict[str, Any] = {"status": status, "pid": pid}
    if status == 200:
        return {**fields, "outcome": OK, "id": answer.get("id")}
    error = " ".join(str(answer.get("error")).split())  # one line: greenlet's errors span several
    return {**fields, "outcome": FAILED, "error": error, "traceback": answer.get("traceback")}


class Sender(threading.Thread):
    def __init__(
        self,
        name: str,
        rng: random.Random,
        port: int,
        channels: list[str],
        clock: Callable[[], float],
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

    def run(self) -> None:
        try:
            n = 0
            while not self.stopping.wait(self.interval * self.rng.uniform(0.5, 1.5)):
                via = self.rng.choice(self.paths)
                channel = self.rng.choice(self.channels)
                data = f"{self.sender}-{n}:" + "x" * self.padding
                invoke = self.clock()
                fields = send_once(self.port, via, channel, data, self.token)
                self.sends.append(Send(self.sender, n, via, channel, data, True, invoke, self.clock(), **fields))
                n += 1
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error
