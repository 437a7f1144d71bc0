"""Long tasks on the event queue, progress in the database, cancellable from any node.

The NocoBase cluster guide's async-task example. ``start_task()`` stores a
:class:`~.models.Task` and publishes its id on the event queue (after commit);
whichever node consumes the channel (a ``runworker`` in production) runs it with
at most ``concurrency`` tasks at once and takes none while the ``idle()`` gate is
closed (queue paused). ``cancel()`` marks the task in the database and broadcasts
over pub/sub, skipping the sending node (which cancels its own copy directly), so
the node running it stops at its next step. Failed attempts are retried with the
queue's backoff; a task whose attempts are spent ends ``dead`` and its event is a
dead letter (admin, ``event_queue.dead_letters()``).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.utils import timezone

from mega_cluster import Plugin

from . import kinds
from .models import Task, TaskQueueState

CHANNEL = "async_tasks.run"
CANCEL_CHANNEL = "async_tasks.cancel"


class TaskNotFound(LookupError):
    """No task has that id."""


class TaskCancelled(Exception):
    """Raised inside a running task when it was cancelled; the task ends."""


class TaskInterrupted(RuntimeError):
    """The attempt timed out or the node is shutting down; the task is retried."""


class TaskRun:
    """What a task function gets: its params, attempt and progress reporting."""

    def __init__(self, task: Task, attempt: int, cancel: threading.Event, ctx: Any):
        self.task_id = str(task.pk)
        self.params: dict[str, Any] = task.params or {}
        self.attempt = attempt
        self._cancel = cancel
        self._ctx = ctx

    def check(self) -> None:
        """Raise ``TaskCancelled`` or ``TaskInterrupted`` when the task must stop."""
        if self._cancel.is_set():
            raise TaskCancelled(self.task_id)
        if self._ctx.cancelled.is_set():
            raise TaskInterrupted("the attempt timed out or the node is stopping")

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, waking at once when the task is cancelled."""
        self._cancel.wait(seconds)
        self.check()

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        """Store progress; stops the task when it was cancelled meanwhile.

        The update only matches while ``cancel_requested`` is false, so a
        cancellation whose broadcast this node missed is noticed here too.
        """
        self.check()
        updated = Task.objects.filter(pk=self.task_id, cancel_requested=False).update(
            progress_done=done,
            progress_total=total,
            message=message[:300],
            updated_at=timezone.now(),
        )
        if not updated:
            raise TaskCancelled(self.task_id)


class AsyncTasksPlugin(Plugin):
    name = "async_tasks"
    version = "1.0.0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paused = False
        #: task id -> cancel flag of the tasks running on this node
        self._running: dict[str, threading.Event] = {}
        #: the last cancellations applied on this node: (task id, "broadcast"|"local")
        self.cancel_log: deque[tuple[str, str]] = deque(maxlen=100)

    @property
    def concurrency(self) -> int:
        return int(getattr(settings, "ASYNC_TASKS_CONCURRENCY", 2))

    # lifecycle -------------------------------------------------------------------

    def before_load(self) -> None:
        self.pubsub.subscribe(CANCEL_CHANNEL, self._on_cancel)
        self.event_queue.subscribe(
            CHANNEL, process=self.run, concurrency=self.concurrency, idle=self.idle
        )

    def load(self) -> None:
        self._read_paused()

    def after_disable(self) -> None:
        # Disabled: take no new task here; enabling runs before_load() again,
        # which subscribes anew.
        self.event_queue.unsubscribe(CHANNEL)
        self.pubsub.unsubscribe(CANCEL_CHANNEL, self._on_cancel)

    def before_stop(self) -> None:
        for cancel in list(self._running.values()):
            cancel.set()

    # starting, cancelling, pausing ---------------------------------------------------

    def start_task(
        self,
        kind: str,
        params: dict[str, Any] | None = None,
        *,
        max_retries: int = 0,
        timeout: float | None = None,
    ) -> Task:
        """Store a task and queue it (after commit inside ``atomic()``).

        Raises ``ValueError`` for an unknown kind or bad params (nothing stored).
        """
        if kind not in kinds.KINDS:
            raise ValueError(
                f"Unknown task kind {kind!r}; registered: {', '.join(sorted(kinds.KINDS))}."
            )
        params = dict(params or {})
        validate = kinds.VALIDATORS.get(kind)
        if validate is not None:
            validate(params)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise ValueError(f"max_retries must be an int, got {max_retries!r}.")
        with transaction.atomic(using=self._alias):
            task = Task.objects.create(
                kind=kind, params=params, max_retries=max_retries
            )
            task.event_id = self.event_queue.publish(
                CHANNEL,
                {"task": str(task.pk)},
                max_retries=max_retries,
                timeout=timeout,
            )
            task.save(update_fields=["event_id"])
        return task

    def cancel(self, task_id: str) -> str:
        """Cancel a task wherever it runs; returns its status afterwards.

        A queued task is cancelled at once; a running one is flagged in the
        database and the node running it is told over pub/sub (it stops at its
        next step). A finished task is left as it is.
        """
        with transaction.atomic(using=self._alias):
            task = self._locked(task_id)
            if task is None:
                raise TaskNotFound(f"No task with id {task_id}.")
            if task.finished:
                return task.status
            task.cancel_requested = True
            if task.status != Task.Status.RUNNING:
                task.status = Task.Status.CANCELLED
                task.finished_at = timezone.now()
                task.message = "cancelled before it ran"
            task.save()
        # pub/sub skips this node, so a task running here is cancelled directly.
        self._cancel_here(str(task.pk), "local")
        self.pubsub.publish(CANCEL_CHANNEL, {"task": str(task.pk)})
        return task.status

    def set_paused(self, paused: bool) -> None:
        """Pause or resume taking new tasks on every node (running ones finish)."""
        with transaction.atomic(using=self._alias):
            if not TaskQueueState.objects.filter(name="default").update(
                paused=paused, updated_at=timezone.now()
            ):
                TaskQueueState.objects.create(name="default", paused=paused)
            self.send_sync_message({"paused": paused}, transaction=self._alias)
            transaction.on_commit(
                lambda: setattr(self, "paused", paused), using=self._alias
            )

    def idle(self) -> bool:
        """The event queue's pull gate: take a new task only while not paused."""
        return not self.paused

    # running -------------------------------------------------------------------------

    def run(self, payload: dict[str, Any], ctx: Any) -> Any:
        task_id = str(payload["task"])
        task = self._claim(task_id, ctx)
        if task is None:
            return None
        cancel = threading.Event()
        self._running[task_id] = cancel
        try:
            # A cancel broadcast between the claim and registering is not lost:
            if Task.objects.filter(pk=task_id, cancel_requested=True).exists():
                cancel.set()
            fn = kinds.KINDS.get(task.kind)
            if fn is None:
                raise LookupError(f"No task kind {task.kind!r} on this node.")
            result = fn(TaskRun(task, ctx.attempt, cancel, ctx))
        except TaskCancelled:
            how = "broadcast" if cancel.is_set() else "database"
            self._finish(task_id, Task.Status.CANCELLED, message=f"cancelled ({how})")
            return None
        except Exception as exc:
            spent = ctx.attempt > task.max_retries
            self._finish(
                task_id,
                Task.Status.DEAD if spent else Task.Status.RETRYING,
                error=f"{type(exc).__name__}: {exc}",
                finished=spent,
            )
            raise
        finally:
            self._running.pop(task_id, None)
        self._finish(task_id, Task.Status.SUCCEEDED, result=result, message="done")
        return None

    def _claim(self, task_id: str, ctx: Any) -> Task | None:
        with transaction.atomic(using=self._alias):
            task = self._locked(task_id)
            if task is None:
                self.logger.warning("event %s names unknown task %s", ctx.id, task_id)
                return None
            if task.finished:  # cancelled while queued, or a redelivery of a done one
                return None
            if task.cancel_requested:
                task.status = Task.Status.CANCELLED
                task.finished_at = timezone.now()
                task.save()
                return None
            task.status = Task.Status.RUNNING
            task.attempts = ctx.attempt
            task.node_id = self.app.node_id
            task.started_at = task.started_at or timezone.now()
            task.error = ""
            task.save()
            return task

    def _finish(
        self, task_id: str, status: str, *, finished: bool = True, **fields: Any
    ) -> None:
        fields.setdefault("message", "")
        if finished:
            fields["finished_at"] = timezone.now()
        Task.objects.filter(pk=task_id).update(
            status=status, updated_at=timezone.now(), **fields
        )

    # other nodes ---------------------------------------------------------------------

    def _on_cancel(self, message: dict[str, Any]) -> None:
        self._cancel_here(str(message["task"]), "broadcast")

    def _cancel_here(self, task_id: str, how: str) -> None:
        cancel = self._running.get(task_id)
        if cancel is not None:
            cancel.set()
            self.cancel_log.append((task_id, how))
            self.logger.info(
                "task %s cancelled on node %s (%s)", task_id, self.app.node_id, how
            )

    def handle_sync_message(self, message: Any) -> None:
        self.paused = bool(message["paused"])

    def handle_sync_gap(self) -> None:
        self._read_paused()

    def _read_paused(self) -> None:
        state = TaskQueueState.objects.filter(name="default").first()
        self.paused = bool(state and state.paused)

    @staticmethod
    def _locked(task_id: str) -> Task | None:
        # Write first: a row lock on PostgreSQL, and on SQLite the write lock
        # before any read (read-then-write can fail with "database is locked").
        try:
            if not Task.objects.filter(pk=task_id).update(updated_at=timezone.now()):
                return None
        except ValidationError:  # not a UUID
            return None
        return Task.objects.get(pk=task_id)

    @property
    def _alias(self) -> str:
        return router.db_for_write(Task)
