"""WSGI entry point that starts the cluster apps once the application is built.

In ``wsgi.py``::

    from mega_cluster.wsgi import get_wsgi_application
    application = get_wsgi_application()

Under gunicorn ``--preload`` the master imports this before forking; every worker
gets its own node id and builds its own connections and listeners after the fork.
"""

from __future__ import annotations

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application as django_wsgi_application

from .registry import start


def get_wsgi_application() -> WSGIHandler:
    application = django_wsgi_application()
    start()
    return application
