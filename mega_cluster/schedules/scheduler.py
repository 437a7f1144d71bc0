"""``get_schedules(app)``: an app's periodic jobs, what decides their ticks, and
the operations the admin and ``cluster_status`` use (pause, resume, run now).

Every ``runworker`` node runs :meth:`Schedules.tick` in a thread
(:mod:`.worker`): no leader, no beat process. A pass reads "now" from the
schedule store (the database server's clock), works out each job's due ticks
from its ``last_tick`` and policies, and claims them with the store's
compare-and-set: one node wins each tick and queues it on the job's event
channel, so the run gets the queue's retries, lease redelivery and dead
letters. With the ``database`` event queue on the schedule database the claim
and the event are one transaction: a tick is queued exactly once or not at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from .. import metrics
from ..events.backends.base import NewEvent
from ..events.backends.database import DatabaseEventBackend
from . import discovery
from .jobs import Job
from .runs import JobRun, RunHandler
from .store import DatabaseScheduleStore, Run, ScheduleStore

if TYPE_CHECKING:
    from ..registry import ClusterApp

__all__ = ["JobRun", "JobStatus", "Schedules", "get_schedules"]

logger = logging.getLogger("mega_cluster.schedules")


class JobNotFound(KeyError, ValueError):
    """No periodic job of that name in this cluster app."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """One job as the admin shows it."""

    job: Job
    paused: bool
    next_run: dt.datetime | None
    last_run: Run | None


class Schedules:
    """The periodic jobs of one cluster app (``get_schedules(app)``)."""

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        self.settings = app.settings.sections["SCHEDULES"]
        self._store: ScheduleStore | None = None
        self._jobs: dict[str, Job] | None = None
        self._extra: dict[str, Job] = {}
        self._lock = threading.RLock()
        self.handler = RunHandler(self)
        #: The soonest moment (store time) a job may fall due, after a pass.
        self.next_due: dt.datetime | None = None

    def __repr__(self) -> str:
        return f"<Schedules app={self.app.name!r} jobs={len(self.jobs())}>"

    # jobs ---------------------------------------------------------------------------

    def jobs(self) -> dict[str, Job]:
        """Every job by name: the setting's, the plugins' and those added."""
        with self._lock:
            if self._jobs is None:
                self._jobs = discovery.collect(self.app, self._extra.values())
            return dict(self._jobs)

    def job(self, name: str) -> Job:
        try:
            return self.jobs()[name]
        except KeyError:
            raise JobNotFound(
                f"No periodic job {name!r} in cluster app {self.app.name!r}; its "
                f"jobs: {', '.join(sorted(self.jobs())) or 'none'}."
            ) from None

    def add(self, job: Job) -> None:
        """Add a job at run time (tasks declared periodic); before ``subscribe()``."""
        with self._lock:
            if job.name in self.jobs() and self.jobs()[job.name] != job:
                raise ImproperlyConfigured(f"Periodic job {job.name!r} exists already.")
            self._extra[job.name] = job
            self._jobs = None

    # where state lives -------------------------------------------------------------

    @property
    def store(self) -> ScheduleStore:
        if self._store is None:
            alias = self.settings["DATABASE"]
            if alias is None:
                alias = self.app.event_queue.backend.transaction_alias()
            self._store = DatabaseScheduleStore(self.app.name, alias)
        return self._store

    def use(self, store: ScheduleStore) -> None:
        """Keep state in ``store`` (the testing kit's memory store)."""
        self._store = store

    def subscribe(self) -> None:
        """Consume every job's channel on this node (done by ``runworker``)."""
        queue = self.app.event_queue
        subscribed = queue.subscriptions()
        for job in self.jobs().values():
            if job.task is None and job.channel not in subscribed:
                queue.subscribe(
                    job.channel,
                    process=self.handler.process,
                    timeout=job.timeout,
                    on_spent=self.handler.on_spent,
                )

    # deciding ticks -----------------------------------------------------------------

    def tick(self) -> list[Run]:
        """One pass: queue every job's due ticks this node wins; return them."""
        store = self.store
        queued: list[Run] = []
        soonest: dt.datetime | None = None
        for job in self.jobs().values():
            try:
                runs, upcoming = self._tick_job(store, job)
            except Exception:
                logger.exception("periodic job %s: deciding its ticks failed", job.name)
                continue
            queued += runs
            if upcoming is not None and (soonest is None or upcoming < soonest):
                soonest = upcoming
        self.next_due = soonest
        return queued

    def _tick_job(self, store: ScheduleStore, job: Job) -> tuple[list[Run], Any]:
        now = store.now()
        initial = job.latest(now, now - dt.timedelta(days=400)) or now
        state = store.state(job.name, initial)
        last = state.last_tick
        ticks: list[dt.datetime] = []
        new = last
        missed = 0
        if state.paused:
            new = job.latest(now, last) or last
        else:
            cutoff = now - dt.timedelta(seconds=job.grace)
            if job.next_after(last) < cutoff:  # late by more than the grace
                old = job.latest(cutoff - dt.timedelta(microseconds=1), last)
                assert old is not None
                missed = 1 if job.missed == "skip" else 0
                if job.missed == "latest":
                    ticks.append(old)
                new = old
            for tick in job.ticks(new, now):
                if tick + dt.timedelta(seconds=job.offset(tick)) > now:
                    break
                ticks.append(tick)
                new = tick
        upcoming = job.next_after(new)
        upcoming += dt.timedelta(seconds=job.offset(upcoming))
        if new == last:
            return [], upcoming
        runs = [self._new_run(job, tick, now, manual=False) for tick in ticks]
        if not store.advance(
            job.name, last, new, runs, self._enqueue, inside=self._inside(job)
        ):
            return [], upcoming  # another node claimed them
        if missed:
            metrics.inc("schedule_ticks_missed", app=self.app.name, job=job.name)
            logger.warning(
                "periodic job %s: ticks up to %s were missed (no worker ran them "
                "within %gs) and are skipped",
                job.name,
                new.isoformat(),
                job.grace,
            )
        for run in runs:
            metrics.inc("schedule_ticks", app=self.app.name, job=job.name)
            logger.info(
                "periodic job %s: tick %s queued by node %s",
                job.name,
                run.tick.isoformat(),
                self.app.node_id,
            )
        return runs, upcoming

    def _new_run(
        self, job: Job, tick: dt.datetime, now: dt.datetime, *, manual: bool
    ) -> Run:
        return Run(
            job=job.name,
            tick=tick,
            manual=manual,
            event_id=uuid.uuid4().hex,
            status="queued",
            queued_at=now,
        )

    def _inside(self, job: Job) -> bool:
        """Whether queuing an event joins the store's transaction (exactly once)."""
        backend = self.app.event_queue.backend
        if job.task is not None:  # its row joins it; its event follows the commit
            return backend.transaction_alias() == self.store.alias
        return (
            type(backend).enqueue is DatabaseEventBackend.enqueue
            and getattr(backend, "alias", None) == self.store.alias
        )

    def _enqueue(self, runs: Sequence[Run]) -> None:
        queue = self.app.event_queue
        jobs = self.jobs()
        for run in runs:
            job = jobs[run.job]
            if job.task is not None:
                result = job.task.enqueue()
                self.store.update(job.name, run.tick, run.manual, event_id=result.id)
                continue
            payload = {
                "job": job.name,
                "tick": run.tick.isoformat(),
                "manual": run.manual,
            }
            queue.backend.enqueue(
                NewEvent(
                    id=run.event_id,
                    channel=job.channel,
                    payload=queue.encode(job.channel, payload),
                    max_retries=job.max_retries,
                    timeout=job.timeout,
                    # due at once on every node, whatever its own clock says
                    available_at=min(time.time(), run.tick.timestamp()),
                    dedupe_key=None,
                )
            )

    # operations ---------------------------------------------------------------------

    def run_now(self, name: str) -> Run:
        """Queue a run of job ``name`` now (besides its ticks); the run."""
        job = self.job(name)
        store = self.store
        now = store.now()
        run = self._new_run(job, now, now, manual=True)
        store.add(run, self._enqueue, inside=self._inside(job))
        logger.info(
            "periodic job %s: run queued by hand on node %s", name, self.app.node_id
        )
        return run

    def pause(self, name: str) -> None:
        """Stop queuing ticks of ``name`` (cluster-wide) until :meth:`resume`."""
        self._set_paused(name, True)

    def resume(self, name: str) -> None:
        """Queue ticks again, from the next one (ticks while paused never run)."""
        self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> None:
        job = self.job(name)
        store = self.store
        now = store.now()
        store.state(job.name, job.latest(now, now - dt.timedelta(days=400)) or now)
        store.set_paused(job.name, paused)

    def status(self) -> list[JobStatus]:
        """Every job with its state, next run and last run, by name."""
        store = self.store
        jobs = self.jobs()
        states = store.states()
        last = store.last_runs(jobs)
        result = []
        for name, job in sorted(jobs.items()):
            state = states.get(name)
            if job.task is not None and name in last:
                last[name] = _task_outcome(job, last[name])
            upcoming = None
            if state is None or not state.paused:
                after = state.last_tick if state is not None else store.now()
                upcoming = job.next_after(after)
                upcoming += dt.timedelta(seconds=job.offset(upcoming))
            result.append(
                JobStatus(
                    job=job,
                    paused=bool(state and state.paused),
                    next_run=upcoming,
                    last_run=last.get(name),
                )
            )
        return result

    def rows(self) -> list[dict[str, Any]]:
        """:meth:`status` as JSON-ready rows (``cluster_status``)."""
        rows = []
        for status in self.status():
            last = status.last_run
            rows.append(
                {
                    "job": status.job.name,
                    "schedule": status.job.schedule,
                    "paused": status.paused,
                    "next_run": status.next_run.isoformat()
                    if status.next_run
                    else None,
                    "last_run": last.tick.isoformat() if last else None,
                    "outcome": last.status if last else None,
                    "error": _last_line(last.error) if last else None,
                }
            )
        return rows

    def runs(self, name: str | None = None, limit: int = 50) -> list[Run]:
        """Recent runs (of one job), newest first."""
        if name is not None:
            self.job(name)
        return self.store.runs(name, limit)


#: django.tasks result statuses as run outcomes
TASK_OUTCOMES = {
    "READY": "queued",
    "RUNNING": "running",
    "SUCCESSFUL": "succeeded",
    "FAILED": "failed",
}


def _task_outcome(job: Job, run: Run) -> Run:
    """A task job's run with the outcome of the task it enqueued."""
    try:
        result = job.task.get_result(run.event_id)
    except Exception:
        return run  # not enqueued (yet), or its result was deleted
    status = TASK_OUTCOMES.get(str(result.status.name), run.status)
    errors = getattr(result, "errors", None) or []
    error = errors[-1].traceback if errors else ""
    return dataclasses.replace(run, status=status, error=error)


def _last_line(text: str) -> str | None:
    lines = text.strip().splitlines()
    return lines[-1] if lines else None


_schedules: weakref.WeakKeyDictionary[Any, Schedules] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def get_schedules(app: ClusterApp | None = None) -> Schedules:
    """The periodic jobs of ``app`` (default: ``get_app()``)."""
    if app is None:
        from ..registry import get_app

        app = get_app()
    with _guard:
        found = _schedules.get(app)
        if found is None:
            found = _schedules[app] = Schedules(app)
        return found
