"""The checker's long run: random seeds, the two deployments in turn, for ``--minutes`` (30 by default).

    .venv/bin/python bench/checker_long.py [--minutes 30] [--seconds 20] [--clients 8] [--keep DIR]

Each run's seed is printed before it starts; a run with violations prints
them with the seed and fault schedule that reproduce it (and, with
``--keep``, writes its history for ``python -m checker --recheck``). At the
end it prints the totals: runs, sends, events checked, faults survived per
kind, violations per kind (0 expected). Exit status 1 if any run had one.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from checker.check import check  # noqa: E402
from checker.report import fault_counts, reproduce, resource_totals, summary, totals, violations_text  # noqa: E402
from checker.run import plan, run  # noqa: E402

DEPLOYMENTS = ["redis", "memory"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--keep", type=Path, default=None, help="write the history of each failing run here")
    args = parser.parse_args()
    end = time.monotonic() + args.minutes * 60
    sums: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    checked: Counter[str] = Counter()
    worst: Counter[str] = Counter()
    found: Counter[str] = Counter()
    harness: list[str] = []
    runs = 0
    while time.monotonic() < end:
        deployment = DEPLOYMENTS[runs % len(DEPLOYMENTS)]
        seed = random.randrange(1 << 31)
        runs += 1
        print(f"run {runs}: {deployment} seed {seed}", flush=True)
        outcome = run(plan(deployment, seed, args.seconds, args.clients))
        history = outcome.history
        violations = check(history)
        sums.update(totals(history))
        faults.update(fault_counts(history))
        for name, value in resource_totals(history).items():
            if name.startswith("worst"):
                worst[name] = max(worst[name], value)
            else:
                checked[name] += value
        found.update(v.kind for v in violations)
        harness += [f"{deployment} seed {seed}: {error}" for error in outcome.errors]
        print(summary(history), flush=True)
        if violations or outcome.errors:
            print(violations_text(violations))
            print("\n".join(f"harness error: {error}" for error in outcome.errors))
            print(reproduce(history), flush=True)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                history.dump(args.keep / f"history-{deployment}-{seed}.jsonl")
    print(f"\n== totals after {runs} runs ({args.minutes:g} min) ==")
    print(", ".join(f"{name} {count}" for name, count in sums.items()))
    print("faults survived: " + (", ".join(f"{k} {n}" for k, n in sorted(faults.items())) or "none"))
    print("resources checked: " + ", ".join(f"{k} {n}" for k, n in [*checked.items(), *worst.items()]))
    print("violations: " + (", ".join(f"{k} {n}" for k, n in sorted(found.items())) or "0"))
    for error in harness:
        print(f"harness error: {error}")
    return 1 if found or harness else 0


if __name__ == "__main__":
    sys.exit(main())
