"""The basic app (``tests/apps/basic.py``) with ``GET /metrics``, prometheus_client's multiprocess recipe.

Run under ``gunicorn -c tests/apps/gunicorn_metrics.py`` with
``PROMETHEUS_MULTIPROC_DIR`` set to an empty directory.
"""

from __future__ import annotations

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from flask_sse_stream.metrics import AppChannels
from tests.apps.basic import create_app as create_basic_app


def create_app() -> Flask:
    app = create_basic_app()

    @app.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # every worker's files, added up
        registry.register(AppChannels(app.sse))  # type: ignore[attr-defined]  # the channels of the whole app
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app
