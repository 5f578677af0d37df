"""What a run prints: a summary of the history, the violations, and how to reproduce them."""

from __future__ import annotations

import json
from collections import Counter

from .history import FAILED, INDETERMINATE, OK, History
from .model import Violation

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
        "resets": sum(1 for e in events if e.event == history.meta.reset_event),
    }


def fault_counts(history: History) -> Counter[str]:
    return Counter(fault.kind for fault in history.faults)


def summary(history: History) -> str:
    meta = history.meta
    config = {k: v for k, v in meta.config.items() if k != "SSE_PUBLISH_TOKEN"}
    lines = [f"deployment {meta.deployment}, seed {meta.seed}, {meta.seconds} s, config {json.dumps(config)}"]
    lines.append(", ".join(f"{name} {count}" for name, count in totals(history).items()))
    by_via = Counter((send.via, send.outcome) for send in history.sends)
    lines.append("sends by path: " + ", ".join(f"{via}/{outcome} {n}" for (via, outcome), n in sorted(by_via.items())))
    faults = fault_counts(history)
    lines.append("faults: " + (", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())) or "none"))
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
        f" --seconds {meta.seconds:g} --clients {meta.clients}{narrowed}\n"
        f"schedule drawn from the seed:\n{steps}\nfaults as they happened:\n{done}"
    )
