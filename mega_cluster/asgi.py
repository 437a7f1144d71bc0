"""ASGI entry point that starts the cluster apps once the application is built.

In ``asgi.py``::

    from mega_cluster.asgi import get_asgi_application
    application = get_asgi_application()
"""

from __future__ import annotations

from django.core.asgi import get_asgi_application as django_asgi_application
from django.core.handlers.asgi import ASGIHandler

from .registry import start


def get_asgi_application() -> ASGIHandler:
    application = django_asgi_application()
    start()
    return application
