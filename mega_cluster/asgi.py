"""Optional ASGI entry point that starts the cluster apps before the first request.

Not needed: with Django's own ``get_asgi_application()`` every process starts its
apps on its first request (:mod:`mega_cluster.autostart`).

In ``asgi.py``::

    from mega_cluster.asgi import get_asgi_application
    application = get_asgi_application()

As with :mod:`mega_cluster.wsgi`, a worker forked from a process that had started
the apps starts them again itself before it serves its first request.
"""

from __future__ import annotations

from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler

from .registry import registry, start


class ClusterASGIHandler(ASGIHandler):
    """Django's ASGI handler that restarts the cluster apps in a forked worker."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if registry.fork_pending:
            await sync_to_async(registry.restart_after_fork, thread_sensitive=False)()
        await super().__call__(scope, receive, send)


def get_asgi_application() -> ASGIHandler:
    django.setup(set_prefix=False)
    application = ClusterASGIHandler()
    start()
    return application
