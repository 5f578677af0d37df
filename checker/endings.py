"""``end_streams`` through the app, aimed at streams being authorized and at workers that have just started.

The :class:`Ender` runs the ending steps of the schedule: an ending by
channel, or by subject (revoking the subject first, for half of them; both
channel and subject for some), aimed at a client whose stream is being
authorized when there is one (most of the time), else at a random client.

:func:`cold_ending` is the nemesis's ``end-cold`` after the worker (or the
in-process server) it restarted answers: probes open streams with a slow
authorizer, and while they are being authorized an ending of their subject
(or channel) is sent; the probes stay open long enough that one the ending
missed shows it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

from .clients import Client, Probe
from .deploy import Deployment
from .history import FAILED, INDETERMINATE, OK, Clock, Connection, Ending
from .senders import Indeterminate, post

#: The share of ending steps aimed at a stream being authorized (when one is).
AIMED = 0.7
#: Seconds between opening the probes and sending the ending (their authorization takes 0.3-0.6 s).
PROBE_LEAD = 0.1
#: Seconds the probes stay open after the ending answered: the second ``check.causes`` gives, and more.
PROBE_HOLD = 2.0
#: Seconds to wait for the restarted worker to answer.
COLD_WAIT = 10.0


def post_ending(
    port: int, clock: Clock, n: int, channel: str | None, subject: str | None, revoke: bool, aim: str
) -> Ending:
    record = Ending(n, channel, subject, revoke, clock(), 0.0, INDETERMINATE, aim)
    try:
        status, answer, worker = post(port, "/checker/end", {"channel": channel, "subject": subject, "revoke": revoke})
    except Indeterminate as error:
        record.error = f"{type(error.__cause__).__name__}: {error.__cause__}"
    except OSError as error:
        record.outcome, record.error = FAILED, f"not sent: {type(error).__name__}: {error}"
    else:
        record.status, record.pid = status, answer.get("pid") or (int(worker) if worker.isdigit() else None)
        record.outcome = OK if status == 200 else FAILED
        record.revoked = bool(answer.get("revoked"))
        record.error = answer.get("error")
    record.complete = clock()
    return record


class Ender(threading.Thread):
    def __init__(
        self, port: int, steps: list[dict[str, Any]], clients: list[Client], clock: Clock, numbers: Any
    ) -> None:
        super().__init__(name="ender", daemon=True)
        self.port, self.steps, self.clients, self.clock, self.numbers = port, steps, clients, clock, numbers
        self.endings: list[Ending] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for step in self.steps:
                if self.stopping.wait(max(0.0, step["at"] - self.clock())):
                    return
                self.endings.append(self._end(step))
        except BaseException as error:  # noqa: BLE001 - reported by the run
            self.error = error

    def _end(self, step: dict[str, Any]) -> Ending:
        authorizing = [pending for client in self.clients if (pending := client.pending) is not None]
        if authorizing and step["aim"] < AIMED:
            aim, (subject, channels) = "authorizing", authorizing[int(step["pick"] * len(authorizing))]
        else:
            client = self.clients[int(step["pick"] * len(self.clients))]
            aim, subject, channels = "random", client.subject, client.channels
        channel = channels[int(step["which"] * len(channels))]
        if step["kind"] == "end-subject" and subject is not None:
            also = channel if step["both"] else None
            return post_ending(self.port, self.clock, next(self.numbers), also, subject, step["revoke"], aim)
        return post_ending(self.port, self.clock, next(self.numbers), channel, None, False, aim)


def cold_ending(
    deployment: Deployment, step: dict[str, Any], before: list[int], clock: Clock, n: int
) -> tuple[list[Connection], Ending, str]:
    """Probes on the restarted process, and an ending while they are authorized; what happened."""
    fresh = _wait_answering(deployment.port, before)
    subject = f"probe-{n}"
    channel = step["channel"]
    probes = [
        Probe(f"probe{n}-{k}", [channel], deployment.port, clock, subject, step["delay"]) for k in range(step["probes"])
    ]
    for probe in probes:
        probe.start()
    time.sleep(PROBE_LEAD)
    by_subject = step["by"] == "subject"
    ending = post_ending(
        deployment.port, clock, n, None if by_subject else channel, subject if by_subject else None, False, "cold"
    )
    time.sleep(PROBE_HOLD)
    for probe in probes:
        probe.stopping.set()
    for probe in probes:
        probe.join(10)
    connections = [c for probe in probes for c in probe.connections]
    pids = sorted({c.pid for c in connections if c.pid is not None})
    detail = f"new process {fresh} answered; {len(probes)} probes of {subject} on {channel} landed on {pids}"
    return connections, ending, detail


def _wait_answering(port: int, before: list[int]) -> int | None:
    """Ping until a process that was not there before answers (the new worker accepts); its pid."""
    deadline = time.monotonic() + COLD_WAIT
    while time.monotonic() < deadline:
        pid = _ping(port)
        if pid is not None and pid not in before:
            return pid
        time.sleep(0.01)
    return None


def _ping(port: int) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request("GET", "/checker/ping")
        answer = json.loads(connection.getresponse().read())
        return int(answer["pid"])
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None
    finally:
        connection.close()
