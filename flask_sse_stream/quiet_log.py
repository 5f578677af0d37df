"""Log lines that a flood of requests cannot multiply: at most one per interval per reason, with a count.

A refused stream or a wrong token is logged at once the first time; the
same reason again within ``interval`` seconds is only counted, and the next
line of that reason says how many were not logged since the previous one.
The counters of :attr:`SSE.stats` keep the exact totals.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .concurrency import allocate_lock


class QuietLog:
    """``warning(reason, message, *args)``: one line per ``reason`` per ``interval`` seconds at most."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = allocate_lock()
        # reason -> (when its last line was logged, how many were not logged since)
        self._reasons: dict[str, tuple[float, int]] = {}

    def warning(self, reason: str, message: str, *args: Any) -> None:
        """Log ``message % args`` at WARNING unless ``reason`` was logged less than ``interval`` seconds ago."""
        now = time.monotonic()
        with self._lock:
            last, held = self._reasons.get(reason, (None, 0))
            if last is not None and now - last < self.interval:
                self._reasons[reason] = (last, held + 1)
                return
            self._reasons[reason] = (now, 0)
        if held:
            message += " (and %d more since the last such line, %.0f s ago)"
            args = (*args, held, now - last)  # type: ignore[operator]
        self.logger.warning(message, *args)
