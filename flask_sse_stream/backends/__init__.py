"""Backends: in-process (the default) and Redis (``SSE_REDIS_URL``)."""

from __future__ import annotations

from ..config import Settings
from .base import Backend, Fanout, Replay
from .memory import MemoryBackend


def create_backend(settings: Settings, fanout: Fanout) -> Backend:
    """The backend that ``settings`` asks for, delivering to ``fanout``."""
    if settings.redis_url is None:
        return MemoryBackend(settings, fanout)
    from .redis import RedisBackend  # redis-py is an optional dependency

    return RedisBackend(settings, fanout)


__all__ = ["Backend", "Fanout", "MemoryBackend", "Replay", "create_backend"]
