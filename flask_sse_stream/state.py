"""What one ``SSE`` keeps for one app: its settings, local streams and backend."""

from __future__ import annotations

from collections.abc import Callable

from .backends import Backend, create_backend
from .config import Settings
from .hub import Hub
from .lifecycle import register
from .stats import Counters


class AppState:
    """Per-app state of an ``SSE`` (one ``SSE`` on two apps has two)."""

    def __init__(self, settings: Settings, authorizers: list[Callable[[str], bool]]) -> None:
        self.settings = settings
        #: Shared with the ``SSE`` object: ``@sse.authorize`` applies to every app.
        self.authorizers = authorizers
        self.counters = Counters()
        self.hub = Hub(self.counters)
        self.backend: Backend = create_backend(settings, self.hub)
        register(self)
