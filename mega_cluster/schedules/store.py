"""Where periodic jobs keep their state and runs: the database (or the testing
kit's memory, :mod:`.memory`).

The one decision that must be made once per cluster, "this node queues tick T
of job J", is :meth:`ScheduleStore.advance`: a compare-and-set of the job's
``last_tick`` and the insert of one run row per tick, in one transaction. Two
nodes that read the same ``last_tick`` both try; the database lets one update
the row (PostgreSQL re-checks the ``WHERE`` after the first commits, SQLite
serialises writers) and the other finds nothing to update and queues nothing.
The unique ``(job, tick)`` constraint of the run rows backs this up.

"Now" is the database server's clock on PostgreSQL (``CLOCK_TIMESTAMP()``), so
a node whose own clock is off decides nothing differently; on SQLite, whose
nodes share a machine, it is that machine's clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.utils import timezone

UTC = dt.UTC


@dataclass(frozen=True, kw_only=True)
class State:
    paused: bool
    last_tick: dt.datetime


@dataclass(frozen=True, kw_only=True)
class Run:
    """One run of a job: a tick (or a "run now", ``manual``) and its outcome.

    ``status``: ``queued``, ``running``, ``succeeded``, ``failed`` (an attempt
    failed; a retry follows), ``dead`` (every attempt failed) or ``skipped``
    (the previous run still ran, or the job's plugin is disabled).
    """

    job: str
    tick: dt.datetime
    manual: bool
    event_id: str
    status: str
    attempts: int = 0
    node: str = ""
    queued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str = ""


FIELDS = (
    "job tick manual event_id status attempts node queued_at started_at "
    "finished_at error"
).split()

#: ``enqueue(runs)``: queue the events of runs just recorded.
Enqueue = Callable[[Sequence[Run]], None]


class ScheduleStore:
    """The contract; :class:`DatabaseScheduleStore` is the real one."""

    #: The database alias whose transaction :meth:`advance` runs in (None: none).
    alias: str | None = None

    def now(self) -> dt.datetime:
        """The time that decides ticks (aware, UTC)."""
        raise NotImplementedError

    def state(self, job: str, initial: dt.datetime) -> State:
        """The job's state, created with ``last_tick=initial`` the first time."""
        raise NotImplementedError

    def states(self) -> dict[str, State]:
        raise NotImplementedError

    def advance(
        self,
        job: str,
        old: dt.datetime,
        new: dt.datetime,
        runs: Sequence[Run],
        enqueue: Enqueue,
        *,
        inside: bool,
    ) -> bool:
        """Move ``last_tick`` from ``old`` to ``new`` and record ``runs``, if no
        other node moved it first; then ``enqueue(runs)`` (inside the transaction
        when ``inside``). False when another node won."""
        raise NotImplementedError

    def add(self, run: Run, enqueue: Enqueue, *, inside: bool) -> None:
        """Record a "run now" and queue it."""
        raise NotImplementedError

    def update(self, job: str, tick: dt.datetime, manual: bool, **fields: Any) -> None:
        """Change a run's fields (``started_at=True``/``finished_at=True``: now)."""
        raise NotImplementedError

    def update_event(self, event_id: str, **fields: Any) -> None:
        """Change the fields of the run queued as event ``event_id``."""
        raise NotImplementedError

    def set_paused(self, job: str, paused: bool) -> bool:
        """Pause or resume; False when the job has no state yet."""
        raise NotImplementedError

    def runs(self, job: str | None = None, limit: int = 50) -> list[Run]:
        """Runs, newest tick first."""
        raise NotImplementedError

    def last_runs(self, jobs: Iterable[str]) -> dict[str, Run]:
        return {job: runs[0] for job in jobs if (runs := self.runs(job, 1))}

    def prune(self, before: dt.datetime) -> int:
        """Delete the runs of ticks older than ``before``; how many."""
        raise NotImplementedError


def _model(name: str) -> Any:
    from .. import models

    return getattr(models, name)


class DatabaseScheduleStore(ScheduleStore):
    def __init__(self, app_name: str, alias: str) -> None:
        self.app_name = app_name
        self.alias = self.db = alias

    def _states(self) -> Any:
        return (
            _model("ScheduleState")
            .objects.using(self.db)
            .filter(app_name=self.app_name)
        )

    def _runs(self) -> Any:
        return (
            _model("ScheduleRun").objects.using(self.db).filter(app_name=self.app_name)
        )

    def now(self) -> dt.datetime:
        connection = connections[self.db]
        if connection.vendor != "postgresql":
            return timezone.now().astimezone(UTC)
        with connection.cursor() as cursor:
            cursor.execute("SELECT CLOCK_TIMESTAMP()")
            value = cursor.fetchone()[0]
        if timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
        return value.astimezone(UTC)

    def _now_expression(self) -> Any:
        from ..locks.backends.db_time import now

        return now(self.db)

    def state(self, job: str, initial: dt.datetime) -> State:
        model = _model("ScheduleState")
        row = self._states().filter(name=job).values_list("paused", "last_tick").first()
        if row is None:
            model.objects.using(self.db).bulk_create(
                [model(app_name=self.app_name, name=job, last_tick=initial)],
                ignore_conflicts=True,
            )
            row = (
                self._states().filter(name=job).values_list("paused", "last_tick").get()
            )
        return State(paused=row[0], last_tick=row[1].astimezone(UTC))

    def states(self) -> dict[str, State]:
        return {
            name: State(paused=paused, last_tick=last.astimezone(UTC))
            for name, paused, last in self._states().values_list(
                "name", "paused", "last_tick"
            )
        }

    def _rows(self, runs: Sequence[Run]) -> list[Any]:
        model = _model("ScheduleRun")
        return [
            model(app_name=self.app_name, **{f: getattr(run, f) for f in FIELDS})
            for run in runs
        ]

    def advance(self, job, old, new, runs, enqueue, *, inside):  # type: ignore[no-untyped-def]
        with transaction.atomic(using=self.db):
            moved = self._states().filter(name=job, last_tick=old).update(last_tick=new)
            if not moved:
                return False
            if runs:
                _model("ScheduleRun").objects.using(self.db).bulk_create(
                    self._rows(runs)
                )
                if inside:
                    enqueue(runs)
        if runs and not inside:
            enqueue(runs)
        return True

    def add(self, run: Run, enqueue: Enqueue, *, inside: bool) -> None:
        try:
            with transaction.atomic(using=self.db):
                _model("ScheduleRun").objects.using(self.db).bulk_create(
                    self._rows([run])
                )
                if inside:
                    enqueue([run])
        except IntegrityError:
            raise ValueError(
                f"job {run.job!r} already has a run at {run.tick}"
            ) from None
        if not inside:
            enqueue([run])

    def update(self, job: str, tick: dt.datetime, manual: bool, **fields: Any) -> None:
        for key in ("started_at", "finished_at"):
            if fields.get(key) is True:
                fields[key] = self._now_expression()
        self._runs().filter(job=job, tick=tick, manual=manual).update(**fields)

    def update_event(self, event_id: str, **fields: Any) -> None:
        if fields.get("finished_at") is True:
            fields["finished_at"] = self._now_expression()
        self._runs().filter(event_id=event_id).update(**fields)

    def set_paused(self, job: str, paused: bool) -> bool:
        return bool(self._states().filter(name=job).update(paused=paused))

    def runs(self, job: str | None = None, limit: int = 50) -> list[Run]:
        rows = self._runs()
        if job is not None:
            rows = rows.filter(job=job)
        return [
            Run(**{**row, "tick": row["tick"].astimezone(UTC)})
            for row in rows.order_by("-tick", "-id").values(*FIELDS)[:limit]
        ]

    def prune(self, before: dt.datetime) -> int:
        deleted, _ = self._runs().filter(tick__lt=before).delete()
        return deleted
