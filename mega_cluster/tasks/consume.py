"""Which task backends a node consumes: every ``mega_cluster.tasks`` backend of
``TASKS`` whose cluster app is the event queue's subscribes its queues' channels
when the queue starts (on every node, like a plugin's ``before_load()``), and
``runworker --queues`` maps task queue names to those channels."""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from ..events import EventQueue
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.tasks")

BACKEND_PATH = "mega_cluster.tasks.ClusterTaskBackend"


def cluster_backends() -> list[Any]:
    """The ``TASKS`` backends that are ``mega_cluster.tasks`` backends (none on
    Django < 6.0, which has no ``django.tasks``)."""
    configured = getattr(settings, "TASKS", None) or {}
    found = []
    for alias, params in configured.items():
        path = params.get("BACKEND", "") if isinstance(params, dict) else ""
        if not path.startswith("mega_cluster."):
            continue
        try:
            from django.tasks import task_backends

            from .backend import ClusterTaskBackend

            cls = import_string(path)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, ClusterTaskBackend):
            found.append(task_backends[alias])
    return found


def _app_name(backend: Any) -> str | None:
    from ..registry import registry

    try:
        return registry.get(backend.settings.app).name
    except Exception:
        return backend.settings.app


def subscribe_tasks(queue: EventQueue) -> None:
    """Subscribe the channels of the task backends of ``queue``'s app."""
    backends = cluster_backends()
    if not backends:  # none configured, or no django.tasks (Django < 6.0)
        return
    from .runner import TaskHandler  # imports django.tasks

    subscribed = queue.subscriptions()
    for backend in backends:
        if backend.settings.problems or _app_name(backend) != queue.app.name:
            continue
        handler = TaskHandler(backend.alias, queue)
        for channel in backend.channels():
            if channel in subscribed:
                continue
            handler.hook(channel)
            queue.subscribe(
                channel,
                process=handler,
                concurrency=backend.settings.concurrency,
                on_spent=handler.on_spent,
            )


def build_event_queue(app: ClusterApp) -> None:
    """At ``app.start()``: build the event queue of an app that runs tasks (it
    then starts with the app, and :func:`subscribe_tasks` runs)."""
    if any(_app_name(b) == app.name for b in cluster_backends()):
        app.component("event_queue")


def queue_channels(queue_names: list[str]) -> list[str]:
    """``runworker --queues``: the channels of these task queues in every
    ``mega_cluster.tasks`` backend that has them."""
    channels: list[str] = []
    for backend in cluster_backends():
        for name in queue_names:
            if name in backend.queues:
                channel = backend.channel(name)
                if channel not in channels:
                    channels.append(channel)
    return channels


def configured_aliases() -> list[str]:
    """``TASKS`` aliases whose ``BACKEND`` names a ``mega_cluster.tasks`` backend."""
    configured = getattr(settings, "TASKS", None) or {}
    return [
        alias
        for alias, params in configured.items()
        if isinstance(params, dict)
        and str(params.get("BACKEND", "")).startswith("mega_cluster.tasks")
    ]


def check_django_version(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``mega_cluster.E034``: a ``mega_cluster.tasks`` backend without
    ``django.tasks`` (Django < 6.0), where ``TASKS`` would be silently ignored."""
    from django.core import checks

    if importlib.util.find_spec("django.tasks") is not None:
        return []
    return [
        checks.Error(
            f"TASKS[{alias!r}] uses mega_cluster.tasks, which needs django.tasks "
            f"(Django 6.0 or newer); this is Django {django.get_version()}, which "
            "ignores TASKS.",
            hint="Upgrade to Django 6.0+ (6.1 for @task(max_retries=...)), or use "
            "app.event_queue directly (docs/events.md).",
            id="mega_cluster.E034",
        )
        for alias in configured_aliases()
    ]


def install() -> None:
    from django.core import checks

    from ..events import queue
    from ..plugins import lifecycle

    if subscribe_tasks not in queue.start_hooks:
        queue.start_hooks.append(subscribe_tasks)
    if build_event_queue not in lifecycle.start_hooks:
        lifecycle.start_hooks.append(build_event_queue)
    checks.register(check_django_version)
