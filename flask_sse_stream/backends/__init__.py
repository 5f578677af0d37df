"""Backends: in-process (the default) and Redis (``SSE_REDIS_URL``)."""

from __future__ import annotations

from ..config import Settings
from ..fanout import Fanout
from .base import Backend
from .memory import MemoryBackend


def create_backend(settings: Settings, fanout: Fanout) -> Backend:
    """The backend that ``settings`` asks for, delivering to ``fanout``."""
    if settings.redis_url is None:
        return MemoryBackend(settings, fanout)
    from .redis import RedisBackend  # redis-py is an optional dependency

    return RedisBackend(settings, fanout)


__all__ = ["Backend", "MemoryBackend", "create_backend"]
