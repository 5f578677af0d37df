"""``python -m checker``: one run against a real deployment, or the checker alone on a kept history.

    python -m checker --deployment redis --seed 7 --seconds 10 [--clients 8] [--server websocket] [--keep DIR]
    python -m checker --recheck DIR/history-redis-7.jsonl

Exit status 0 without violations, 1 with some, 2 when the harness failed.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from .check import check
from .history import History
from .report import reproduce, summary, violations_text
from .run import plan, run
from .senders import PATHS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checker", description=__doc__.splitlines()[0])
    parser.add_argument("--deployment", choices=["redis", "memory"], default="redis")
    parser.add_argument("--seed", type=int, default=None, help="random when not given (printed)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--server", choices=["gevent", "websocket"], default=None, help="drawn from the seed if unset")
    parser.add_argument("--paths", default=None, help=f"narrow the sender paths (comma-separated: {','.join(PATHS)})")
    parser.add_argument("--faults", default=None, help="narrow the fault kinds (comma-separated; see checker.nemesis)")
    parser.add_argument("--keep", type=Path, default=None, help="write the history here (on a violation)")
    parser.add_argument("--keep-always", action="store_true", help="with --keep: write it even without violations")
    parser.add_argument("--recheck", type=Path, default=None, help="check a kept history again; run nothing")
    args = parser.parse_args(argv)
    if args.recheck is not None:
        history = History.load(args.recheck)
        return show(history, [])
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"seed {seed}", flush=True)
    paths = args.paths.split(",") if args.paths else None
    faults = args.faults.split(",") if args.faults else None
    outcome = run(plan(args.deployment, seed, args.seconds, args.clients, paths, faults, args.server))
    status = show(outcome.history, outcome.errors)
    if args.keep is not None and (status != 0 or args.keep_always):
        args.keep.mkdir(parents=True, exist_ok=True)
        path = args.keep / f"history-{args.deployment}-{seed}.jsonl"
        outcome.history.dump(path)
        (args.keep / f"server-{args.deployment}-{seed}.log").write_text(outcome.log)
        print(f"history kept in {path}")
    return status


def show(history: History, errors: list[str]) -> int:
    violations = check(history)
    print(summary(history))
    print(violations_text(violations))
    for error in errors:
        print(f"harness error: {error}")
    if violations or errors:
        print(reproduce(history))
    return 2 if errors else 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
