"""``mega_cluster.tasks``: a ``django.tasks`` backend on the cluster's event queue.

``TASKS = {"default": {"BACKEND": "mega_cluster.tasks.ClusterTaskBackend"}}``: every
task queue is an event-queue channel (``tasks.<queue name>``), so tasks run on
every transport of ``EVENT_QUEUE`` (memory, database, Celery) with its retries,
backoff, leases and dead letters, and their results live in the ``TaskRun`` model,
readable from any node. docs/tasks.md is the guide.

This package imports ``django.tasks`` (Django 6.0+) only where needed, so
:func:`channel_for` and the channel names import on any Django version.
"""

from __future__ import annotations

from typing import Any

from .channels import DEFAULT_CHANNEL_PREFIX, channel_for, queue_channel

__all__ = [
    "DEFAULT_CHANNEL_PREFIX",
    "ClusterTask",
    "ClusterTaskBackend",
    "TaskAttemptLost",
    "channel_for",
    "queue_channel",
]


def __getattr__(name: str) -> Any:
    # The backend needs django.tasks (Django 6.0+): imported on first use only.
    if name in ("ClusterTaskBackend", "ClusterTask"):
        try:
            from . import backend
        except ModuleNotFoundError as exc:
            if exc.name != "django.tasks":
                raise
            from django import get_version
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                f"mega_cluster.tasks.{name} needs django.tasks (Django 6.0 or "
                f"newer); this is Django {get_version()}."
            ) from exc

        return getattr(backend, name)
    if name == "TaskAttemptLost":
        from .runner import TaskAttemptLost

        return TaskAttemptLost
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
