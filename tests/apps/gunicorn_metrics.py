"""gunicorn's configuration for prometheus_client's multiprocess mode: a dead worker's gauges go with it."""

from typing import Any

from prometheus_client import multiprocess

worker_class = "gevent"


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)
