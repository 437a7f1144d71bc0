"""The generic Celery task of the event queue (one for every channel and app)."""

from __future__ import annotations

from typing import Any

from .celery import TASK_NAME
from .celery_consumer import _consumers


def deliver(
    task: Any, app_name: str, event_id: str, channel: str, first: Any = None
) -> None:
    # Set by the broker (RabbitMQ) or kombu (a message restored by Redis'
    # visibility timeout or given back): a consumer had this message before.
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    consumer = _consumers.get(app_name)
    if consumer is None:
        # A plain ``celery worker`` process: start the cluster app so plugins
        # subscribe, then look again.
        from ...registry import get_app

        queue = get_app(app_name).start().event_queue
        queue.start()
        consumer = _consumers.get(app_name)
        if consumer is None:
            raise RuntimeError(
                f"cluster app {app_name!r} does not consume its event queue in this "
                "process (EVENT_QUEUE CONSUME is off)"
            )
    consumer.deliver(event_id, channel, first, redelivered)


def register(celery_app: Any) -> Any:
    """Register :func:`deliver` on ``celery_app`` (idempotent)."""
    if TASK_NAME in celery_app.tasks:
        return celery_app.tasks[TASK_NAME]
    return celery_app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )(deliver)
