"""``ClusterTaskBackend``: the ``django.tasks`` backend (Django 6.0+).

Enqueueing writes the task's ``TaskRun`` row and its event on the event queue's
database: on the ``database`` transport the event is a row written with it, in one
statement on PostgreSQL (one round trip, one commit) and one transaction
elsewhere; with the other transports (``memory``, ``celery``) the event is queued
when the row's transaction commits. Either way, inside the caller's ``atomic()`` block
the task is queued only once the block commits, never on rollback, and a worker
always finds the row.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, cast

from django.core import checks
from django.db import connections, transaction
from django.tasks import Task, TaskResult
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MIN_PRIORITY
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.json import normalize_json

from ..events.backends.base import NewEvent
from ..events.backends.database import DatabaseEventBackend
from ..exceptions import ConfigurationError, InvalidName
from .channels import queue_channel
from .options import TaskOptions, parse_options
from .results import to_result
from .store import insert_statement, new_row, rows

__all__ = ["ClusterTask", "ClusterTaskBackend"]

#: The largest retry budget of a task (the event queue's ``max_retries`` limit).
MAX_RETRIES_LIMIT = 2**31 - 1


def _retries_problem(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_RETRIES_LIMIT:
        return (
            f"max_retries must be None (the backend's MAX_RETRIES) or a whole "
            f"number from 0 to {MAX_RETRIES_LIMIT}, got {value!r}."
        )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterTask(Task):
    """A ``django.tasks`` Task with a retry budget of its own.

    ``@task(max_retries=5)`` (Django 6.1 forwards extra keyword arguments to the
    backend's task class) or ``some_task.using(max_retries=5)``: the task runs at
    most ``1 + max_retries`` times, retried with the event queue's backoff;
    ``None`` (the default) takes the backend's ``OPTIONS["MAX_RETRIES"]``.
    """

    max_retries: int | None = None

    def __post_init__(self) -> None:
        problem = _retries_problem(self.max_retries)
        if problem is not None:
            raise InvalidTask(problem)
        # Not super(): slots=True makes a new class the implicit cell does not name.
        Task.__post_init__(self)

    def using(self, *, max_retries: int | None = None, **changes: Any) -> ClusterTask:
        """``Task.using()``, plus ``max_retries``."""
        task: Any = Task.using(self, **changes)
        if max_retries is not None:
            task = replace(task, max_retries=max_retries)
        return cast(ClusterTask, task)


class ClusterTaskBackend(BaseTaskBackend):
    """Runs tasks through the cluster app's event queue (docs/tasks.md)."""

    task_class = ClusterTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.settings: TaskOptions = parse_options(self.options)

    def __repr__(self) -> str:
        return f"<ClusterTaskBackend alias={self.alias!r}>"

    # the cluster side ---------------------------------------------------------------

    @property
    def app(self) -> Any:
        """The cluster app whose event queue runs the tasks (started on first use,
        as ``get_app()`` does)."""
        from ..registry import get_app

        return get_app(self.settings.app)

    def channel(self, queue_name: str) -> str:
        """The event-queue channel of task queue ``queue_name``."""
        return queue_channel(queue_name, self.settings.channel_prefix)

    def channels(self) -> list[str]:
        """The channels of this backend's ``QUEUES`` (what workers consume)."""
        return [self.channel(q) for q in sorted(self.queues)]

    def max_retries(self, task: Task) -> int:
        own = getattr(task, "max_retries", None)
        return self.settings.max_retries if own is None else own

    # enqueueing ---------------------------------------------------------------------

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        problem = _retries_problem(getattr(task, "max_retries", None))
        if problem is not None:
            raise InvalidTask(problem)
        try:
            self.channel(task.queue_name)
        except InvalidName as exc:
            raise InvalidTask(str(exc)) from exc

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        if self.settings.problems:
            raise ConfigurationError(
                f"TASKS[{self.alias!r}]: " + " ".join(self.settings.problems)
            )
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        queue = self.app.event_queue
        channel = self.channel(task.queue_name)
        now = timezone.now()
        due = time.time()
        if task.run_after is not None and task.run_after > now:
            due += (task.run_after - now).total_seconds()
        else:
            # Priority as a head start (never before run_after): of the due tasks
            # the one due earliest runs first (docs/tasks.md, "Priority").
            due -= (task.priority - TASK_MIN_PRIORITY) * self.settings.priority_step
        event = NewEvent(
            id=uuid.uuid4().hex,
            channel=channel,
            payload=queue.encode(channel, {"task": task.module_path}),
            max_retries=self.max_retries(task),
            timeout=None,
            available_at=due,
            dedupe_key=None,
        )
        events = queue.backend
        alias = events.transaction_alias()
        row = new_row(
            id=event.id,
            app_name=queue.app.name,
            backend=self.alias,
            task_path=task.module_path,
            queue_name=task.queue_name,
            priority=task.priority,
            run_after=task.run_after,
            args=args,
            kwargs=kwargs,
            max_retries=event.max_retries,
            enqueued_at=now,
        )
        result = to_result(row, task)
        if isinstance(events, DatabaseEventBackend):
            # The event is a row of the same database, written with the result
            # row: one statement on PostgreSQL, one transaction elsewhere (a
            # worker sees both or neither); inside the caller's atomic() both
            # are part of its transaction.
            events.enqueue_with(event, insert_statement(alias, row))
            transaction.on_commit(
                lambda: task_enqueued.send(type(self), task_result=result),
                using=alias,
            )
            return result
        outermost = not connections[alias].in_atomic_block
        try:
            with transaction.atomic(using=alias):
                row.save(using=alias, force_insert=True)
                # queued elsewhere: only once the row is committed
                transaction.on_commit(
                    lambda: self._queue(events, event, result), using=alias
                )
        except BaseException:
            if outermost:  # committed, but its event was not queued: forget it
                with contextlib.suppress(Exception):
                    rows(alias).filter(id=event.id).delete()
            raise
        return result

    def _queue(self, events: Any, event: NewEvent, result: TaskResult) -> None:
        events.enqueue(event)
        task_enqueued.send(type(self), task_result=result)

    # results ------------------------------------------------------------------------

    def get_result(self, result_id: Any) -> TaskResult:
        alias = self.app.event_queue.backend.transaction_alias()
        row = rows(alias).filter(id=str(result_id), backend=self.alias).first()
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        return to_result(row)

    # checks -------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = [*super().check(**kwargs)]
        where = f"TASKS[{self.alias!r}]"
        for problem in self.settings.problems:
            errors.append(
                checks.Error(
                    f"{where}: {problem}",
                    hint="See the OPTIONS of docs/tasks.md.",
                    id="mega_cluster.E030",
                )
            )
        if not self.queues:
            errors.append(
                checks.Error(
                    f"{where}['QUEUES'] is empty: a mega_cluster.tasks backend "
                    "needs the names of its queues (each is a channel workers "
                    "consume).",
                    hint='Give QUEUES, e.g. ["default"].',
                    id="mega_cluster.E031",
                )
            )
        for queue_name in sorted(self.queues):
            try:
                self.channel(queue_name)
            except InvalidName as exc:
                errors.append(
                    checks.Error(
                        f"{where}['QUEUES'] has {queue_name!r}: {exc}",
                        hint="Use letters, digits and _ . : - in queue names.",
                        id="mega_cluster.E032",
                    )
                )
        errors += app_problems(self.settings.app, where)
        return errors


def app_problems(app: str | None, where: str) -> list[checks.CheckMessage]:
    from ..exceptions import AmbiguousApp, AppNotFound
    from ..registry import registry

    try:
        registry.get(app)
    except (AppNotFound, AmbiguousApp) as exc:
        return [
            checks.Error(
                f"{where}['OPTIONS']['APP']: {exc}",
                hint="Name one of the MEGA_CLUSTER apps in OPTIONS['APP'].",
                id="mega_cluster.E033",
            )
        ]
    except Exception:  # registry not ready or mega_cluster misconfigured: its checks
        return []
    return []
