"""What a run prints: a summary of the history, the violations, and how to reproduce them."""

from __future__ import annotations

import json
from collections import Counter

from .history import FAILED, INDETERMINATE, OK, History
from .model import Violation
from .resources import other_fds

#: Violations printed per kind (all are counted).
SHOWN = 8


def totals(history: History) -> dict[str, int]:
    outcomes = Counter(send.outcome for send in history.sends)
    events = [e for c in history.connections for e in c.events]
    return {
        "sends accepted": outcomes[OK],
        "sends failed": outcomes[FAILED],
        "sends indeterminate": outcomes[INDETERMINATE],
        "events received": sum(1 for e in events if e.id is not None),
        "connections": len(history.connections),
        "over websocket": sum(1 for c in history.connections if c.transport == "websocket"),
        "resets": sum(1 for e in events if e.event == history.meta.reset_event),
    }


def fault_counts(history: History) -> Counter[str]:
    """The faults done by the nemesis, and those of the application: endings, expiries, timeouts, kills, threads."""
    counts = Counter(fault.kind for fault in history.faults)
    for ending in history.endings:
        kind = "end-subject" if ending.subject is not None else "end-channel"
        counts[f"{kind} ({ending.aim})"] += 1
        counts["revocation"] += ending.revoked
    counts["expiry"] += sum(1 for c in history.connections if c.expires is not None and c.status == 200)
    for send in history.sends:  # a timeout that fired, a kill that came before the send returned
        if send.via in ("timeout", "kill", "burst") and (send.error or "").startswith(("Timeout", "GreenletExit")):
            counts["send-kill" if send.via == "kill" else "send-timeout"] += 1
    requests = {(send.via, send.request) for send in history.sends if send.request is not None}
    counts.update(f"send-{via}" for via, _ in requests)
    return +counts


def resource_totals(history: History) -> dict[str, int]:
    """What the resource checks judged: processes with a start and an end, samples; the worst growths seen."""
    grown, hubs_grown, judged = 0, 0, 0
    for pid in {s.pid for s in history.processes if s.phase == "final"}:
        samples = [s for s in history.processes if s.pid == pid]
        judged += 1
        grown = max(grown, other_fds(samples[-1]) - other_fds(samples[0]))
        hubs = [h.hubs for h in history.hubs if h.pid == pid]
        hubs_grown = max(hubs_grown, hubs[-1] - hubs[0] if hubs else 0)
    return {
        "processes judged": judged,
        "process samples": len(history.processes),
        "redis samples": len(history.redis),
        "worst fd growth": grown,
        "worst hub growth": hubs_grown,
    }


def resources(history: History) -> str:
    """What each process held at the end against its start (fds, hubs), and Redis's subscriptions."""
    parts = []
    for pid in sorted({s.pid for s in history.processes if s.phase == "final"}):
        samples = [s for s in history.processes if s.pid == pid]
        hubs = [h.hubs for h in history.hubs if h.pid == pid]
        hub_text = f", hubs {hubs[0]}->{hubs[-1]}" if hubs else ""
        parts.append(f"{pid}: fds {samples[0].fds}->{samples[-1].fds}{hub_text}")
    final = [s for s in history.redis if s.phase == "final"]
    if final:
        parts.append(f"subscriptions {len(final[-1].pubsub)}, pub/sub channels {len(final[-1].channels)}")
    return "resources at the end: " + ("; ".join(parts) or "none sampled")


def summary(history: History) -> str:
    meta = history.meta
    config = {k: v for k, v in meta.config.items() if k != "SSE_PUBLISH_TOKEN"}
    head = f"deployment {meta.deployment} ({meta.server}), seed {meta.seed}, {meta.seconds} s"
    lines = [f"{head}, config {json.dumps(config)}"]
    lines.append(", ".join(f"{name} {count}" for name, count in totals(history).items()))
    by_via = Counter((send.via, send.outcome) for send in history.sends)
    lines.append("sends by path: " + ", ".join(f"{via}/{outcome} {n}" for (via, outcome), n in sorted(by_via.items())))
    faults = fault_counts(history)
    lines.append("faults: " + (", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())) or "none"))
    lines.append(resources(history))
    return "\n".join(lines)


def violations_text(violations: list[Violation]) -> str:
    if not violations:
        return "no violations"
    kinds = Counter(v.kind for v in violations)
    lines = [f"{len(violations)} violation(s): " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))]
    for kind in sorted(kinds):
        same = [v for v in violations if v.kind == kind]
        lines += [f"  {v}" for v in same[:SHOWN]]
        if len(same) > SHOWN:
            lines.append(f"  … and {len(same) - SHOWN} more {kind}")
    return "\n".join(lines)


def reproduce(history: History) -> str:
    meta = history.meta
    steps = "\n".join(f"  {json.dumps(step)}" for step in meta.schedule) or "  (none)"
    done = "\n".join(f"  {f.start:8.3f}-{f.end:8.3f} {f.kind}: {f.detail}" for f in history.faults) or "  (none)"
    narrowed = "".join(
        f" --{name} {','.join(value)}" for name, value in (("paths", meta.paths), ("faults", meta.faults)) if value
    )
    return (
        f"reproduce with: python -m checker --deployment {meta.deployment} --seed {meta.seed}"
        f" --seconds {meta.seconds:g} --clients {meta.clients} --server {meta.server}{narrowed}\n"
        f"schedule drawn from the seed:\n{steps}\nfaults as they happened:\n{done}"
    )
