"""Optional WSGI entry point that starts the cluster apps before the first request.

Not needed: with Django's own ``get_wsgi_application()`` (the ``wsgi.py`` that
``startproject`` writes) every process starts its apps on its first request
(:mod:`mega_cluster.autostart`). Use this one to start earlier, or to make a
failing start stop the server from booting.

In ``wsgi.py``::

    from mega_cluster.wsgi import get_wsgi_application
    application = get_wsgi_application()

The apps start when the module is imported, so a server that does not fork is ready
before its first request. Under gunicorn ``--preload`` the master imports this and
then forks: each worker gets its own node id, drops what the master built, and starts
its apps (plugins, listeners, heartbeat) itself before it serves its first request.
"""

from __future__ import annotations

from typing import Any

import django
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponseBase

from .registry import registry, start


class ClusterWSGIHandler(WSGIHandler):
    """Django's WSGI handler that restarts the cluster apps in a forked worker."""

    def __call__(
        self, environ: dict[str, Any], start_response: Any
    ) -> HttpResponseBase:
        if registry.fork_pending:
            registry.restart_after_fork()
        return super().__call__(environ, start_response)


def get_wsgi_application() -> WSGIHandler:
    django.setup(set_prefix=False)
    application = ClusterWSGIHandler()
    start()
    return application
