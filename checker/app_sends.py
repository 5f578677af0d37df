"""How the app under test sends, one path per ``via``: what an ordinary Flask/gevent application does.

One event per request:

- ``method``, ``function``: ``current_app.sse.send_new_event`` and the module function, in the request's greenlet;
- ``greenlet``: in a greenlet of its own, joined;
- ``thread``: in a native OS thread (even when the process is monkey-patched), joined without blocking the hub;
- ``timeout``: inside ``gevent.Timeout(timeout_ms)``, as a request deadline would;
- ``kill``: in a greenlet killed ``kill_ms`` after it started, as a cancelled job would be.

Several events per request (the answer holds one outcome per event, with when its call began and ended):

- ``threads``: ``threads`` native OS threads started together, each sending its share in turn, then ending;
- ``pool``: a ``concurrent.futures.ThreadPoolExecutor`` made for the request (in a monkey-patched
  process its threads are greenlets);
- ``seq``: one after another in the request's greenlet (live-only and id'd mixed, for the order of both);
- ``burst``: one greenlet per event, all at once, each inside its own ``gevent.Timeout`` (``timeouts_ms``),
  as jobs fanned out under a deadline are.

An outcome is ``ok`` (with its id), ``failed`` (``ConnectionError``: not sent; status 503; or another
error: status 500, with its traceback) or ``indeterminate`` (a timeout or a kill, or a ``ConnectionError``
that says the event may or may not have been sent).
"""

from __future__ import annotations

import concurrent.futures
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

import gevent
import gevent.monkey
from greenlet import GreenletExit

Call = Callable[[], "int | None"]
SINGLE = ("method", "function", "greenlet", "thread", "timeout", "kill")
MANY = ("threads", "pool", "seq", "burst")
VIAS = SINGLE + MANY


def attempt(call: Call) -> dict[str, Any]:
    """``call()``, as the outcome the checker records."""
    start = time.monotonic()
    try:
        outcome: dict[str, Any] = {"outcome": "ok", "id": call(), "status": 200}
    except ConnectionError as error:
        unsure = "may or may not" in str(error)
        outcome = {"outcome": "indeterminate" if unsure else "failed", "status": 503, "error": _text(error)}
    except (gevent.Timeout, GreenletExit) as error:
        outcome = {"outcome": "indeterminate", "status": None, "error": _text(error)}
    except BaseException as error:  # noqa: BLE001 - the checker records it as a finding
        text = "".join(traceback.format_exception(error))
        outcome = {"outcome": "failed", "status": 500, "error": _text(error), "traceback": text}
    return {**outcome, "start": start, "end": time.monotonic()}


def _text(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def single(via: str, call: Call, body: dict[str, Any]) -> dict[str, Any]:
    if via in ("method", "function"):
        return attempt(call)
    if via == "greenlet":
        return attempt(lambda: gevent.spawn(call).get())
    if via == "thread":
        return attempt(lambda: in_native_thread(call))
    if via == "timeout":
        return attempt(lambda: _within(float(body["timeout_ms"]) / 1000, call))
    return _killed_after(float(body["kill_ms"]) / 1000, call)


def _within(seconds: float, call: Call) -> int | None:
    with gevent.Timeout(seconds):
        return call()


def _killed_after(seconds: float, call: Call) -> dict[str, Any]:
    box: list[dict[str, Any]] = []
    started: list[bool] = []

    def run() -> None:
        started.append(True)
        box.append(attempt(call))

    job = gevent.spawn(run)
    job.join(seconds)
    job.kill()  # nothing if it has finished
    if box:
        return box[0]
    if not started:  # killed before it ran: the send was never called
        return {"outcome": "failed", "status": None, "error": "GreenletExit: killed before it started"}
    return {"outcome": "indeterminate", "status": None, "error": "GreenletExit: killed"}


def many(via: str, calls: list[Call], threads: int, deadlines: list[float] | None = None) -> list[dict[str, Any]]:
    if via == "seq":
        return [attempt(call) for call in calls]
    if via == "burst":
        seconds = deadlines or [1.0] * len(calls)
        jobs = [gevent.spawn(attempt, partial(_within, t, call)) for t, call in zip(seconds, calls, strict=True)]
        return [job.get() for job in jobs]
    shares = [calls[n::threads] for n in range(threads)]
    if via == "pool":
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [[pool.submit(attempt, call) for call in share] for share in shares]
        done = [[future.result() for future in share] for share in futures]
    else:
        done = _native_threads(shares)
    # Back in the order of ``calls``.
    results: list[dict[str, Any]] = [{}] * len(calls)
    for n, share in enumerate(done):
        for k, result in enumerate(share):
            results[n + k * threads] = result
    return results


def _native_threads(shares: list[list[Call]]) -> list[list[dict[str, Any]]]:
    """One OS thread per share, all let go at once, each sending its share in turn and ending."""
    allocate_lock = gevent.monkey.get_original("_thread", "allocate_lock")
    gates = [allocate_lock() for _ in shares]
    for gate in gates:
        gate.acquire()
    done: list[list[dict[str, Any]]] = [[] for _ in shares]

    def sender(n: int) -> Callable[[], None]:
        def run() -> None:
            gates[n].acquire()
            done[n] = [attempt(call) for call in shares[n]]

        return run

    jobs = [_start_native(sender(n)) for n in range(len(shares))]
    for gate in gates:
        gate.release()
    for job in jobs:
        _join_native(job)
    return done


def in_native_thread(call: Call) -> int | None:
    """Run ``call`` in a new OS thread; wait for it without blocking the gevent hub.

    ``threading.Thread`` is no way to get an OS thread in a patched process
    (it starts through the patched ``_thread.start_new_thread``: a greenlet),
    so this takes the originals of ``_thread``.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["id"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the request
            outcome["error"] = error

    _join_native(_start_native(run))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["id"]  # type: ignore[no-any-return]


def _start_native(run: Callable[[], None]) -> Any:
    """A native OS thread running ``run``; its lock is released when it ends."""
    start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")
    done = gevent.monkey.get_original("_thread", "allocate_lock")()
    done.acquire()

    def body() -> None:
        try:
            run()
        finally:
            done.release()

    start_new_thread(body, ())
    return done


def _join_native(done: Any) -> None:
    if gevent.monkey.is_module_patched("_thread"):
        gevent.get_hub().threadpool.apply(done.acquire)  # a pool thread waits; the hub goes on
    else:
        done.acquire()
