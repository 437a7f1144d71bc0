"""Starting the cluster apps by themselves, with the entry points Django writes.

Adding ``mega_cluster`` to ``INSTALLED_APPS`` is enough: :func:`install` (run by
``AppConfig.ready()``, which connects nothing) hooks the moments when a process
begins to serve or to work, and each hook calls ``Registry.ensure_started()``,
which starts every app once per process and again in a forked child:

* ``request_started`` - the first request of every WSGI or ASGI process
  (``runserver``, gunicorn with or without ``--preload``, uWSGI, uvicorn, daphne),
  whatever the entry point. Django has no "server is up" signal and its ASGI
  handler does not speak the lifespan protocol, so the first request is the one
  moment every server shares; it waits for the start and is then served by a
  started app. A fork needs no hook: the check is per pid.
* Celery's ``worker_process_init`` (each prefork child, and the solo pool) and
  ``worker_ready`` (threads, gevent and eventlet pools, which run tasks in the
  worker process itself): a task of the project's own Celery app finds a started
  app with its process's node id.
* ``get_app()`` - a shell, a script or a management command of the project
  starts the apps on first use, without consuming events (a short-lived process
  must not take work from the queue; ``runworker`` is the process for that).

Commands that must not start anything (``migrate``, ``check`` ...) turn it off:
see :data:`NO_AUTOSTART_COMMANDS`. ``runworker`` starts the apps itself.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.signals import request_started

from .registry import registry

#: ``manage.py`` commands in which nothing starts by itself, so no connection is
#: opened (a data migration or a check calling ``get_app()`` gets a stopped app).
NO_AUTOSTART_COMMANDS = frozenset(
    {
        "check",
        "cluster_status",
        "collectstatic",
        "compilemessages",
        "createcachetable",
        "dbshell",
        "diffsettings",
        "dumpdata",
        "findstatic",
        "flush",
        "inspectdb",
        "loaddata",
        "makemessages",
        "makemigrations",
        "migrate",
        "optimizemigration",
        "sendtestemail",
        "showmigrations",
        "sqlflush",
        "sqlmigrate",
        "sqlsequencereset",
        "squashmigrations",
        "startapp",
        "startproject",
    }
)


def management_command(argv: list[str]) -> str | None:
    """The command ``manage.py`` / ``django-admin`` / ``python -m django`` runs."""
    if len(argv) < 2:
        return None
    program = argv[0].replace("\\", "/").rsplit("/", 1)[-1]
    if program in ("manage.py", "django-admin", "django-admin.py", "__main__.py"):
        return argv[1]
    return None


def install() -> None:
    """Connect the hooks (idempotent); called from ``AppConfig.ready()``."""
    if management_command(sys.argv) in NO_AUTOSTART_COMMANDS:
        registry.autostart = False
    request_started.connect(_on_request_started, dispatch_uid="mega_cluster.autostart")
    if "celery" in sys.modules:  # a project with a Celery app imports it first
        _connect_celery()


def _on_request_started(sender: Any, **kwargs: Any) -> None:
    # The test client sends request_started too; tests start apps explicitly
    # (get_app() or app.start()), not behind the back of a TestCase.
    if getattr(sender, "__module__", "").startswith("django.test"):
        return
    registry.serving = True
    registry.ensure_started()


def _connect_celery() -> None:
    from celery import signals

    signals.worker_process_init.connect(
        _on_worker_process_init, weak=False, dispatch_uid="mega_cluster.autostart"
    )
    signals.worker_ready.connect(
        _on_worker_ready, weak=False, dispatch_uid="mega_cluster.autostart"
    )


def _on_worker_process_init(**kwargs: Any) -> None:
    registry.serving = True
    registry.ensure_started()


def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    # A prefork worker's main process only hands tasks to its children, which
    # start their own apps (worker_process_init); other pools run tasks here.
    pool = getattr(sender, "pool", None)
    if type(pool).__module__ == "celery.concurrency.prefork":
        return
    registry.serving = True
    registry.ensure_started()
