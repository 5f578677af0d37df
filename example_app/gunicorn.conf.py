"""gunicorn settings for server-sent events: ``gunicorn -c example_app/gunicorn.conf.py 'example_app:create_app()'``.

``BIND`` (default ``127.0.0.1:8000``) and ``WEB_CONCURRENCY`` (the number of
workers, default 4) come from the environment; options on the command line
(``-b``, ``-w``) win over this file.
"""

import os

# The library's gunicorn hook: as each worker starts, SIGTERM is set to end its
# streams at once, and several workers without SSE_REDIS_URL are warned about.
from flask_sse_stream.gunicorn_worker import post_worker_init  # noqa: F401

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# A stream holds a connection for as long as the page is open: gevent workers
# serve each one in a greenlet, and gunicorn's default of 1000 connections
# per worker would refuse the 1001st stream.
worker_class = "gevent"
worker_connections = 10000
# On SIGTERM the library ends every stream of the worker at once (the browsers
# reconnect to the other workers), so a worker has no reason to wait long.
graceful_timeout = 5
# Seconds a silent worker lives before the master restarts it; gevent workers
# report from their event loop, so open streams do not count as silence.
timeout = 30
# Seconds an idle keep-alive connection waits for the next request.
keepalive = 5

# gunicorn's error log format, with the logger's name, for gunicorn and the
# library ("flask_sse_stream" and its children such as "flask_sse_stream.redis").
logconfig_dict = {
    "formatters": {
        "generic": {
            "format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
        },
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
        "access_console": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access_console"], "propagate": False},
        "flask_sse_stream": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
    },
    "root": {"level": "WARNING", "handlers": ["error_console"]},
}
