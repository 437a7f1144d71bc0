"""The former home of the Celery backend's task, kept because docs told plain
``celery worker`` processes to import it (``CELERY_IMPORTS``); the task is now
:mod:`mega_cluster.events.backends.celery.task`."""

from .celery.task import deliver, register

__all__ = ["deliver", "register"]
