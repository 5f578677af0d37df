"""``resource-leak``: what the app holds at the end of the run, against its start, judged on the samples recorded.

- file descriptors of each process alive at the end: at most ``FD_SLACK``
  more than when it had started, not counting its sockets to Redis (its pool,
  bounded by ``POOL``) and to clients (none are left by then);
- gevent hubs of each process: at most ``HUB_SLACK`` more than at its start;
- sockets to Redis: never more than ``POOL`` established per process for
  ``PUBSUB_LINGER`` or longer, nor at the end;
- subscription connections (``CLIENT LIST TYPE pubsub``): never more than
  one per process for longer than ``PUBSUB_LINGER``, one at most per live
  process at the end, and none that no live process holds;
- ``PUBSUB CHANNELS`` at the end, when no stream is open anywhere: no
  channel's subscription (``{prefix}:c:<channel>``), only the app's control
  or events channel;
- Redis keys at the end: each of a kind the library documents, per-channel
  keys only for channels that were sent to, per-process count keys only for
  processes that ran.

The names come from docs/deployment.rst ("Keys"), and, for the endings and
counts the docs do not list, from flask_sse_stream/backends/redis_scripts.py.
"""

from __future__ import annotations

import re
from collections import defaultdict

from .history import History, HubSample, ProcessSample, RedisSample
from .model import Violation

#: File descriptors a process may hold at the end beyond its start (files a library opens once, lazily).
FD_SLACK = 10
#: Hubs a process may hold at the end beyond its start (issue 21: "back to their baseline").
HUB_SLACK = 1
#: Connections to Redis per process and app, the subscription's included (docs/deployment.rst, "Connections").
POOL = 8
#: Seconds a process may hold a second subscription connection while it replaces the first (or a ninth
#: connection to Redis while it replaces one of the pool's).
PUBSUB_LINGER = 1.0
#: Keys with no channel in their name (docs/deployment.rst; ``ending``, ``endings``, ``counts``: redis_scripts.py).
APP_KEYS = ("id", "lost", "epoch", "run", "restart", "clock", "ending", "endings", "counts")
CHANNEL_KEYS = ("store", "marks")


def resource_violations(history: History) -> list[Violation]:
    out = fd_and_hub_violations(history)
    out += pool_violations(history.processes)
    out += pubsub_violations(history.redis)
    final = [sample for sample in history.redis if sample.phase == "final"]
    if final:
        out += channel_violations(final[-1], history.meta.redis_prefix)
        out += key_violations(final[-1], history)
    return [Violation("resource-leak", why) for why in out]


def other_fds(sample: ProcessSample) -> int:
    """Its fds but its sockets to Redis and to clients."""
    return sample.fds - sample.redis - sample.clients


def fd_and_hub_violations(history: History) -> list[str]:
    out = []
    hubs: dict[int, list[HubSample]] = defaultdict(list)
    for hub in history.hubs:
        hubs[hub.pid].append(hub)
    samples: dict[int, list[ProcessSample]] = defaultdict(list)
    for sample in history.processes:
        samples[sample.pid].append(sample)
    for pid, taken in samples.items():
        finals = [s for s in taken if s.phase == "final"]
        # Its start: the first sample once the app was loaded (its first hub sample), not while it booted.
        loaded = hubs[pid][0].t if hubs[pid] else taken[0].t
        starts = [s for s in taken if s.t >= loaded and s.phase != "final"] or taken
        if finals and other_fds(finals[-1]) - other_fds(starts[0]) > FD_SLACK:
            end, start = finals[-1], starts[0]
            out.append(
                f"process {pid} held {end.fds} file descriptors at the end ({other_fds(end)} besides its"
                f" {end.redis} sockets to Redis and {end.clients} of clients), {other_fds(start)} at"
                f" {start.t:.3f} s: {other_fds(end) - other_fds(start)} more ({end.threads} threads)"
            )
    for pid, counted in hubs.items():
        ends = [h for h in counted if h.phase == "final"]
        if ends and ends[-1].hubs - counted[0].hubs > HUB_SLACK:
            out.append(f"process {pid} held {ends[-1].hubs} gevent hubs at the end, {counted[0].hubs} at its start")
    return out


def pool_violations(samples: list[ProcessSample]) -> list[str]:
    """More than ``POOL`` connections to Redis in a process: at the end, or for ``PUBSUB_LINGER`` during the run.

    (One replaced connection may overlap its successor for a moment: seen once in a long run, 9 for one
    sample, then 8 again.)
    """
    out, told = [], set()
    since: dict[int, float] = {}
    for sample in samples:
        pid = sample.pid
        if sample.phase == "final":
            if sample.redis > POOL and pid not in told:
                told.add(pid)
                out.append(
                    f"process {pid} held {sample.redis} connections to Redis at the end (the pool's bound: {POOL})"
                )
            continue
        if sample.redis_established <= POOL:
            since.pop(pid, None)
            continue
        first = since.setdefault(pid, sample.t)
        if sample.t - first >= PUBSUB_LINGER and pid not in told:
            told.add(pid)
            held = f"{sample.redis_established} connections to Redis from {first:.3f} s to {sample.t:.3f} s at least"
            out.append(f"process {pid} held {held} (the pool's bound: {POOL})")
    return out


def _per_process(sample: RedisSample) -> dict[int | None, int]:
    counts: dict[int | None, int] = defaultdict(int)
    for _, pid in sample.pubsub:
        counts[pid] += 1
    return counts


def pubsub_violations(samples: list[RedisSample]) -> list[str]:
    out, told = [], set()
    since: dict[int, float] = {}
    for sample in samples:
        counts = _per_process(sample)
        if sample.phase == "final":
            for pid, count in counts.items():
                if pid is None:
                    out.append(f"{count} subscription connection(s) to Redis at the end that no live process holds")
                elif count > 1:
                    out.append(f"process {pid} held {count} subscription connections to Redis at the end")
            continue
        for pid in list(since):
            if counts.get(pid, 0) <= 1:
                del since[pid]
        for pid, count in counts.items():
            if pid is None or count <= 1:
                continue
            first = since.setdefault(pid, sample.t)
            if sample.t - first >= PUBSUB_LINGER and pid not in told:
                told.add(pid)
                held = f"from {first:.3f} s to {sample.t:.3f} s at least"
                out.append(f"process {pid} held {count} subscription connections to Redis {held}")
    return out


def channel_violations(final: RedisSample, prefix: str) -> list[str]:
    app = {f"{{{prefix}}}:control", f"{{{prefix}}}:events"}
    per_channel = f"{{{prefix}}}:c:"
    held = [name[len(per_channel) :] for name in final.channels if name.startswith(per_channel)]
    other = [name for name in final.channels if name not in app and not name.startswith(per_channel)]
    out = []
    if held:
        out.append(
            f"at the end, with no stream open anywhere, Redis still had subscriptions to channels {', '.join(held)}"
        )
    if other:
        out.append(f"at the end, Redis had subscriptions to pub/sub channels of no known kind: {', '.join(other)}")
    return out


def key_violations(final: RedisSample, history: History) -> list[str]:
    prefix = f"{{{history.meta.redis_prefix}}}:"
    sent = {send.channel for send in history.sends} | {marker.channel for marker in history.markers}
    pids = {sample.pid for sample in history.processes} | {sample.pid for sample in history.hubs}
    unknown, stray, counts = [], [], []
    for key in final.keys or []:
        kind, _, rest = key[len(prefix) :].partition(":") if key.startswith(prefix) else ("", "", "")
        if key.startswith(prefix) and kind in APP_KEYS and not rest:
            continue
        if kind in CHANNEL_KEYS and rest:
            if rest not in sent:
                stray.append(key)
        elif kind == "counts" and rest:
            counts.append(rest)
        else:
            unknown.append(key)
    out = []
    if unknown:
        out.append(f"Redis keys of no kind the library documents: {', '.join(sorted(unknown)[:10])}")
    if stray:
        out.append(f"Redis keys of channels nothing was sent to: {', '.join(sorted(stray)[:10])}")
    foreign = [c for c in counts if not (m := re.search(r":(\d+):", c)) or int(m.group(1)) not in pids]
    if len(counts) > len(pids) or foreign:
        out.append(
            f"{len(counts)} per-process count keys for {len(pids)} processes that ran: {', '.join(sorted(counts)[:10])}"
        )
    return out
