"""The example app of flask_sse_stream, in two forms.

- ``python -m example_app``: the seed's walkthrough (:mod:`example_app.walkthrough`),
  a page on one port and its stream, served by ``start_sse_tcp_port``, on
  another; the lines typed at the prompt are the events.
- ``gunicorn -c example_app/gunicorn.conf.py 'example_app:create_app()'``:
  the same page as a Flask app (:mod:`example_app.app`), its stream at
  ``/stream`` and a form that sends events; with ``SSE_REDIS_URL`` for
  several workers.
"""

from .app import create_app as create_app
from .walkthrough import main as main

__all__ = ["create_app", "main"]
