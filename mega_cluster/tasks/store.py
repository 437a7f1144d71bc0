"""The task results: ``TaskRun`` rows, and the fenced writes of an attempt.

Every write an attempt makes (its start, its outcome) is one transaction on the
event queue's database (:meth:`EventBackend.transaction_alias`) that first asks
the event backend whether the attempt still holds its event
(:meth:`EventBackend.hold`: running this attempt, lease not lapsed; the lease is
extended) and locks the row, whose ``attempt`` must be this attempt's. An attempt
that lost its lease (its worker froze past the lease, another node took the event)
writes nothing: :class:`LeaseLost`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from ..exceptions import EventQueueError

if TYPE_CHECKING:
    from ..events.backends.base import EventBackend
    from ..models import TaskRun

FINAL = ("SUCCESSFUL", "FAILED")


class LeaseLost(EventQueueError):
    """The attempt no longer holds its event (its lease lapsed or another attempt
    took it): its result was not written."""


def _model() -> type[TaskRun]:
    from ..models import TaskRun

    return TaskRun


def rows(alias: str) -> Any:
    return _model().objects.using(alias)


@dataclass(frozen=True)
class Fence:
    """One attempt's claim on its result row: the event backend that leases the
    event, the database of the rows, the event (= result) id and attempt."""

    events: EventBackend
    alias: str
    id: str
    attempt: int
    lease: float

    def _locked(self) -> TaskRun | None:
        """The row, locked until the transaction ends, if the attempt still holds
        its event; None otherwise."""
        if not self.events.hold(self.id, self.attempt, lease=self.lease):
            return None
        return rows(self.alias).select_for_update().filter(id=self.id).first()

    def start(self, worker_id: str) -> TaskRun | None:
        """Take the row for this attempt (``RUNNING``, this worker appended);
        None when the attempt must not run the task: it lost its event, the row is
        gone, the task already succeeded, or a final failure was recorded by an
        earlier attempt (a dead letter retried from the admin starts again at
        attempt 1 and runs)."""
        with transaction.atomic(using=self.alias):
            row = self._locked()
            if row is None or row.status == "SUCCESSFUL":
                return None
            if row.status == "FAILED" and self.attempt > row.attempt:
                return None
            now = timezone.now()
            row.status = "RUNNING"
            row.attempt = self.attempt
            row.started_at = row.started_at or now
            row.last_attempted_at = now
            row.finished_at = None
            row.worker_ids = [*row.worker_ids, worker_id]
            row.save(
                update_fields=[
                    "status",
                    "attempt",
                    "started_at",
                    "last_attempted_at",
                    "finished_at",
                    "worker_ids",
                ]
            )
            return row

    def finish(
        self,
        status: str,
        *,
        return_value: Any = None,
        error: dict[str, str] | None = None,
    ) -> TaskRun:
        """Record this attempt's outcome: ``SUCCESSFUL`` with ``return_value``,
        ``READY`` (failed, retried) or ``FAILED`` (final) with ``error``. Raises
        :class:`LeaseLost` (nothing written) when the attempt lost its event."""
        with transaction.atomic(using=self.alias):
            row = self._locked()
            if row is None or row.attempt != self.attempt or row.status != "RUNNING":
                raise LeaseLost(
                    f"task {self.id}: attempt {self.attempt} lost its lease; its "
                    "result was not written (another attempt runs the task)."
                )
            row.status = status
            if status == "SUCCESSFUL":
                row.return_value = return_value
            if error is not None:
                row.errors = [*row.errors, error]
            if status in FINAL:
                row.finished_at = timezone.now()
            row.save(update_fields=["status", "return_value", "errors", "finished_at"])
            return row


def fail_lost(alias: str, task_id: str, error: dict[str, str]) -> TaskRun | None:
    """Record a final failure for a task whose last attempt was lost (the event
    was dead-lettered without running again); None when the row is final (or
    gone), else the row."""
    with transaction.atomic(using=alias):
        row = rows(alias).select_for_update().filter(id=task_id).first()
        if row is None or row.status in FINAL:
            return None
        row.status = "FAILED"
        row.errors = [*row.errors, error]
        row.finished_at = timezone.now()
        row.save(update_fields=["status", "errors", "finished_at"])
        return row
