"""Task queue names as event-queue channels (no ``django.tasks`` import here).

A task queue ``Q`` of a ``mega_cluster.tasks`` backend is the event-queue channel
``<CHANNEL_PREFIX>Q`` (default prefix ``tasks.``) of the backend's cluster app.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import InvalidName
from ..validation import validate_name

#: The default ``OPTIONS["CHANNEL_PREFIX"]``.
DEFAULT_CHANNEL_PREFIX = "tasks."


def queue_channel(queue_name: str, prefix: str = DEFAULT_CHANNEL_PREFIX) -> str:
    """The event-queue channel of task queue ``queue_name``.

    Raises ``InvalidName`` (a ``ValueError``) when the result is not a channel
    name (1-200 characters of ``A-Z a-z 0-9 _ . : -``).
    """
    if not isinstance(queue_name, str):
        raise InvalidName(f"a task queue name must be a string, got {queue_name!r}.")
    return validate_name(f"{prefix}{queue_name}", "task queue channel")


def channel_for(task: Any) -> str:
    """The event-queue channel a ``django.tasks`` Task is enqueued to.

    ``task`` is a Task (``@task`` function) whose backend is a
    ``mega_cluster.tasks`` backend; ``task.using(queue_name=...)`` gives the
    channel of another queue. Raises ``TypeError`` for anything else.
    """
    get_backend = getattr(task, "get_backend", None)
    if get_backend is None or not hasattr(task, "queue_name"):
        raise TypeError(f"channel_for() takes a django.tasks Task, got {task!r}.")
    backend = get_backend()
    channel = getattr(backend, "channel", None)
    if channel is None:
        raise TypeError(
            f"task {task.module_path} uses backend {task.backend!r} "
            f"({type(backend).__name__}), not a mega_cluster.tasks backend."
        )
    return channel(task.queue_name)
