"""The Celery event backend (``BACKEND: "celery"``): see :mod:`.backend`."""

from .backend import CeleryEventBackend
from .protocol import CELERY_SETTINGS, TASK_NAME

__all__ = ["CELERY_SETTINGS", "TASK_NAME", "CeleryEventBackend"]
