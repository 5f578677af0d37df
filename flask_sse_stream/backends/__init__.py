"""Backends: in-process (the default) and Redis (``SSE_REDIS_URL``)."""

from __future__ import annotations

from ..config import Settings
from .base import Backend, Deliver, Replay
from .memory import MemoryBackend


def create_backend(settings: Settings, deliver: Deliver) -> Backend:
    """The backend that ``settings`` asks for, delivering to ``deliver``."""
    if settings.redis_url is None:
        return MemoryBackend(settings, deliver)
    from .redis import RedisBackend  # type: ignore[import-not-found]  # redis-py is optional

    return RedisBackend(settings, deliver)  # type: ignore[no-any-return]


__all__ = ["Backend", "Deliver", "MemoryBackend", "Replay", "create_backend"]
