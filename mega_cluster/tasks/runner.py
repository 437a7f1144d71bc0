"""What a worker runs for one task attempt: the event queue's handler of a task
queue's channel.

The attempt takes its ``TaskRun`` row (fenced, see :mod:`.store`), calls the task
function (sync in the handler thread, ``async def`` through ``async_to_sync``),
then records the outcome, fenced again: ``SUCCESSFUL`` with the JSON return value,
or the error (class path and traceback) as ``READY`` when the task has retries
left or ``FAILED`` on its last attempt. A failure is raised on to the event
queue, which retries with its backoff or dead-letters the event, so the row and
the event agree.
On the ``database`` queue on PostgreSQL the start is one statement with the
event's lease check, and a success one statement that also completes the event
(the handler returns ``SETTLED``: the queue writes nothing more).
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from django.tasks import TaskContext, task_backends
from django.tasks.signals import task_finished, task_started
from django.utils.json import normalize_json

from ..events.attempts import SETTLED
from ..exceptions import EventQueueError
from .results import load_task, to_result
from .store import NOT_STARTED, Fence, StartOnClaim, fail_lost, one_statement

if TYPE_CHECKING:
    from ..events import EventContext, EventQueue
    from ..events.backends.database import DatabaseEventBackend

logger = logging.getLogger("mega_cluster.tasks")


class TaskAttemptLost(EventQueueError):
    """The task's last attempt was lost (its worker died before recording an
    outcome) and no attempt was left: recorded as the task's final error."""


class TaskInterrupted(EventQueueError):
    """The task raised a ``BaseException`` that is not an ``Exception`` (e.g.
    ``SystemExit``): recorded as its error, handed to the event queue as this."""


def error_of(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    return {
        "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
        "traceback": "".join(traceback.format_exception(exc)),
    }


class TaskHandler:
    """The handler of the channels of one ``TASKS`` backend on one event queue."""

    def __init__(self, alias: str, queue: EventQueue) -> None:
        self.alias = alias
        self.queue = queue
        events = queue.backend
        #: Starts the rows in the claims (PostgreSQL database queue), else None.
        self.starts: StartOnClaim | None = None
        self._claims: DatabaseEventBackend | None = None
        if one_statement(events) and events.takes_claim_hooks():
            self.starts = StartOnClaim(events.transaction_alias(), queue.app.node_id)
            self._claims = events

    def hook(self, channel: str) -> None:
        """Start the rows of ``channel``'s tasks in its claims (when it can)."""
        if self._claims is not None and self.starts is not None:
            self._claims.add_claim_hook(channel, self.starts)

    def __repr__(self) -> str:
        return f"<TaskHandler backend={self.alias!r} app={self.queue.app.name!r}>"

    def fence(self, ctx: EventContext) -> Fence:
        events = self.queue.backend
        return Fence(
            events=events,
            alias=events.transaction_alias(),
            id=ctx.id,
            attempt=ctx.attempt,
            lease=self.queue.settings["LEASE"],
        )

    def __call__(self, payload: Any, ctx: EventContext) -> Any:
        fence = self.fence(ctx)
        row = NOT_STARTED
        if self.starts is not None:
            row = self.starts.take(ctx.id, ctx.attempt)
        if row is NOT_STARTED:
            row = fence.start(self.queue.app.node_id)
        if row is None:
            logger.info(
                "task %s: attempt %d has nothing to run (finished, gone, or its "
                "event taken by another attempt)",
                ctx.id,
                ctx.attempt,
            )
            return
        sender = type(task_backends[self.alias])
        final = ctx.attempt > row.max_retries
        try:
            task = load_task(row)
        except ValueError as exc:
            fence.finish("FAILED" if final else "READY", error=error_of(exc))
            raise
        result = to_result(row, task)
        task_started.send(sender=sender, task_result=result)
        try:
            if task.takes_context:
                value = task.call(
                    TaskContext(task_result=result), *row.args, **row.kwargs
                )
            else:
                value = task.call(*row.args, **row.kwargs)
            value = normalize_json(value)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            row = fence.finish("FAILED" if final else "READY", error=error_of(exc))
            if final:
                task_finished.send(sender=sender, task_result=to_result(row, task))
            if isinstance(exc, Exception):
                raise
            raise TaskInterrupted(f"{type(exc).__name__}: {exc}") from exc
        row, settled = fence.succeed(value)
        task_finished.send(sender=sender, task_result=to_result(row, task))
        return SETTLED if settled else None

    def on_spent(self, ctx: EventContext, error: str) -> None:
        """The event was dead-lettered without running: its lost attempts spent
        the budget. The row gets its final failure (unless it is final already)."""
        if self.starts is not None:
            self.starts.take(ctx.id, ctx.attempt)  # its claim may have started it
        row = fail_lost(
            self.queue.backend.transaction_alias(),
            ctx.id,
            {
                "exception_class_path": "mega_cluster.tasks.TaskAttemptLost",
                "traceback": f"mega_cluster.tasks.TaskAttemptLost: {error}\n",
            },
        )
        if row is None:
            return
        logger.error("task %s failed: %s", ctx.id, error)
        try:
            result = to_result(row)
        except ValueError:  # the task cannot be imported here: no signal
            return
        task_finished.send(sender=type(task_backends[self.alias]), task_result=result)
