"""Task functions of the tasks contract suite (imported with ``TASKS`` set, see
``conftest.py``): module-level, as ``django.tasks`` requires."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from django.db import connections
from django.dispatch import receiver
from django.tasks import task
from django.tasks.signals import task_finished


@task
def noop_task(*args, **kwargs):
    return None


@task
async def noop_task_async(*args, **kwargs):
    await asyncio.sleep(0)
    return None


@task
def calculate_meaning_of_life():
    return 42


@task
async def add_async(a, b):
    await asyncio.sleep(0)
    return a + b


@task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task
def failing_task_value_error():
    raise ValueError("This Task failed due to ValueError")


@task
def failing_task_system_exit():
    raise SystemExit("This Task failed due to SystemExit")


@task
def complex_return_value():
    return {1, 2, 3}  # not JSON


@task(takes_context=True)
def get_task_id(context):
    return context.task_result.id


@task(takes_context=True, max_retries=2)
def flaky(context, fail_times):
    """Fails its first ``fail_times`` attempts; returns the attempt that worked."""
    if context.attempt <= fail_times:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return context.attempt


@task(max_retries=1)
def always_fails():
    raise RuntimeError("always")


@task(takes_context=True, max_retries=1)
def expire_own_lease(context, path):
    """Lets its event's lease lapse under itself (as a frozen worker's would), then
    returns; attempt 2 and later just succeed. Appends each attempt to ``path``."""
    attempt = context.attempt
    with Path(path).open("a") as f:
        f.write(json.dumps({"attempt": attempt, "pid": os.getpid()}) + "\n")
    if attempt == 1:
        alias = os.environ.get("MC_TASKS_TEST_ALIAS", "default")
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "UPDATE mega_cluster_event SET lease_expires_at = 0 WHERE id = %s",
                [context.task_result.id],
            )
    return attempt


@task(takes_context=True)
def record_run(context, path):
    with Path(path).open("a") as f:
        f.write(context.task_result.id + "\n")
    return "ran"


def _log(line: str) -> None:
    path = os.environ.get("MC_TASKS_LOG")
    if path:
        # One short O_APPEND write per line: whole lines from many processes.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@task(takes_context=True)
def chaos(context, index):
    """A task of the kill -9 test: logs its start and end, sleeps in between."""
    result = context.task_result
    _log(f"start {result.id} {context.attempt} {os.getpid()}")
    time.sleep(float(os.environ.get("MC_TASKS_SLEEP", "0.1")))
    _log(f"done {result.id} {context.attempt} {os.getpid()}")
    return index


@receiver(task_finished)
def _log_finished(sender, task_result, **kwargs):
    _log(
        f"finished {task_result.id} {task_result.attempts} {os.getpid()} "
        f"{task_result.status}"
    )


@task(takes_context=True, max_retries=2)
def whose(context):
    """Logs its start and end (``MC_TASKS_SLEEP`` apart); returns its process id."""
    result = context.task_result
    _log(f"start {result.id} {context.attempt} {os.getpid()}")
    time.sleep(float(os.environ.get("MC_TASKS_SLEEP", "0.1")))
    _log(f"done {result.id} {context.attempt} {os.getpid()}")
    return os.getpid()
