"""The Celery side of the backend: the generic task (one for every channel and
app), the registry through which it finds this process's consumer, and the
embedded worker ``runworker`` runs.

A plain ``celery -A proj worker`` imports this module (``CELERY_IMPORTS``) to know
the task; the task starts the cluster app on first use so plugins subscribe.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from .protocol import TASK_NAME


class Deliverer(Protocol):
    def deliver(
        self, event_id: str, channel: str, first: Any, redelivered: bool
    ) -> None: ...


#: app name -> consumer of this process (the task hands its messages over here).
_consumers: dict[str, Deliverer] = {}


def attach(app_name: str, consumer: Deliverer) -> None:
    """Make ``consumer`` run the messages of ``app_name`` in this process."""
    _consumers[app_name] = consumer


def detach(app_name: str, consumer: Deliverer) -> None:
    if _consumers.get(app_name) is consumer:
        del _consumers[app_name]


def deliver(task: Any, *args: Any, **kwargs: Any) -> None:
    # ``app name, event id, channel[, carried event]`` (protocol.py); anything else
    # is a message we did not send: counted, logged and dropped (acknowledged).
    from ....exceptions import AppNotFound
    from ...attempts import incoming

    if kwargs or not 3 <= len(args) <= 4 or not isinstance(args[0], str):
        why = f"its arguments are {args!r:.120} {kwargs!r:.60}"
        incoming.count("?", "message", "a Celery message", why)
        return
    app_name, event_id, channel, *rest = args
    first = rest[0] if rest else None
    # Set by the broker (RabbitMQ) or kombu (a message restored by Redis'
    # visibility timeout or given back): a consumer had this message before.
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    consumer = _consumers.get(app_name)
    if consumer is None:
        # A plain ``celery worker`` process: start the cluster app so plugins
        # subscribe, then look again.
        from ....registry import get_app

        try:
            app = get_app(app_name)
        except AppNotFound:
            why = f"app {app_name[:60]!r} is not configured here"
            incoming.count("?", "message", "a Celery message", why)
            return
        queue = app.start().event_queue
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


def build_worker(
    celery_app: Any, *, hostname: str, queues: list[str], concurrency: int
) -> tuple[Any, threading.Event]:
    """An embedded Celery worker (not started) with a thread pool on ``queues``, and
    the event it sets once it consumes. Prefetch 1, no heartbeat, mingle or gossip:
    a worker reserves no more than it runs and costs the broker nothing idle."""
    ready = threading.Event()

    class Controller(celery_app.WorkController):  # type: ignore[name-defined,misc]
        def on_consumer_ready(self, consumer: Any) -> None:
            ready.set()

    worker = Controller(
        app=celery_app,
        hostname=hostname,
        pool="threads",
        concurrency=concurrency,
        queues=queues,
        loglevel="WARNING",
        ready_callback=None,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        prefetch_multiplier=1,
    )
    return worker, ready
