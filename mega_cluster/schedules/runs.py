"""Running one tick of a job: the event handler of every job's channel."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..calls import call_sync

if TYPE_CHECKING:
    from ..events.context import EventContext
    from .scheduler import Schedules

logger = logging.getLogger("mega_cluster.schedules")


@dataclass(frozen=True, kw_only=True)
class JobRun:
    """What a job's function is called with.

    ``tick`` is the scheduled time (aware, UTC; for a "run now", when it was
    asked), ``manual`` True for a "run now", ``attempt`` counts from 1 (a retry
    or a redelivery after a lost worker is the next attempt), ``cancelled`` is
    set when the run timed out or the node drains: long jobs should check it.
    """

    job: str
    tick: dt.datetime
    manual: bool
    attempt: int
    node: str
    cancelled: threading.Event = field(default_factory=threading.Event)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class RunHandler:
    """``process(payload, ctx)`` of the job channels."""

    def __init__(self, schedules: Schedules) -> None:
        self.schedules = schedules

    def on_spent(self, ctx: EventContext, error: str) -> None:
        """The run's event was dead-lettered without running (its lost attempts,
        nodes that died mid-run, spent the budget): the run is dead."""
        schedules = self.schedules
        schedules.store.update_event(
            ctx.id, status="dead", attempts=ctx.attempt, error=error, finished_at=True
        )
        job = ctx.channel.removeprefix("mc.schedule.")
        metrics.inc("schedule_runs", app=schedules.app.name, job=job, outcome="dead")
        logger.error("periodic job %s: run %s is dead: %s", job, ctx.id, error)

    def process(self, payload: Any, ctx: EventContext) -> None:
        schedules = self.schedules
        app = schedules.app
        job = schedules.jobs().get(payload["job"])
        if job is None:
            logger.warning(
                "periodic job %s is not declared on node %s; its run is dropped",
                payload["job"],
                app.node_id,
            )
            return
        tick = dt.datetime.fromisoformat(payload["tick"])
        manual = bool(payload.get("manual"))
        store = schedules.store

        def record(status: str, **fields: Any) -> None:
            store.update(job.name, tick, manual, status=status, **fields)
            if status != "running":
                metrics.inc("schedule_runs", app=app.name, job=job.name, outcome=status)

        plugin = app.plugins.get(job.plugin) if job.plugin else None
        if plugin is not None and not plugin.enabled:
            record(
                "skipped", error=f"plugin {job.plugin} is disabled", finished_at=True
            )
            return
        lock = None
        if not job.overlap:
            lock = app.lock_manager.try_acquire(
                f"mc.schedule:{job.name}", auto_extend=True
            )
            if lock is None:
                logger.info(
                    "periodic job %s: tick %s skipped, the previous run still runs",
                    job.name,
                    payload["tick"],
                )
                record(
                    "skipped",
                    attempts=ctx.attempt,
                    node=app.node_id,
                    error="the previous run was still running",
                    finished_at=True,
                )
                return
        run = JobRun(
            job=job.name,
            tick=tick,
            manual=manual,
            attempt=ctx.attempt,
            node=app.node_id,
            cancelled=ctx.cancelled,
        )
        try:
            record(
                "running",
                attempts=ctx.attempt,
                node=app.node_id,
                started_at=True,
                error="",
            )
            call_sync(job.func, run)
        except BaseException as exc:
            dead = ctx.attempt > job.max_retries
            record("dead" if dead else "failed", error=_error(exc), finished_at=True)
            raise
        else:
            record("succeeded", finished_at=True)
        finally:
            if lock is not None:
                lock.release()
