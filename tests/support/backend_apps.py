"""A base for test classes run once per backend: ``new_app(**config)`` on the class's ``backend_config``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE


class OnABackend:
    """Subclasses provide ``backend_config`` (the SSE_* keys of their backend)."""

    @pytest.fixture
    def backend_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @pytest.fixture
    def new_app(self, make_app, backend_config) -> Iterator[Callable[..., tuple[Flask, SSE]]]:
        """``new_app(**config)``: an app on this backend; its backend is closed after the test."""
        made: list[tuple[Flask, SSE]] = []  # the apps too: an SSE keeps its apps by weak reference

        def make(**config: Any) -> tuple[Flask, SSE]:
            app, sse = make_app(**{**backend_config, **config})
            made.append((app, sse))
            return app, sse

        yield make
        for _app, sse in made:
            sse.close()
