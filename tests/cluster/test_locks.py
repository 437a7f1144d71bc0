"""Locks across real OS processes: exclusion, one winner, takeover after kill -9.

Run for the ``redis`` backend and the ``database`` backend on PostgreSQL and on
SQLite (one file shared by the processes; not in the 800-increment test).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from mega_cluster.testing import make_app
from tests.databases import ON_POSTGRES

WORKER = "tests/cluster/locks_worker.py"

BACKENDS = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param(
        "database-postgres",
        id="database-postgres",
        marks=ON_POSTGRES,
    ),
    pytest.param(
        "database-sqlite",
        id="database-sqlite",
        marks=pytest.mark.django_db(transaction=True),
    ),
]

pytestmark = pytest.mark.cluster


def locks_json(kind: str) -> str:
    if kind == "redis":
        return json.dumps({"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}})
    alias = "postgres" if kind == "database-postgres" else "default"
    # Cross-process waiters of the database backend re-check at POLL_INTERVAL.
    return json.dumps(
        {"BACKEND": "database", "OPTIONS": {"DATABASE": alias, "POLL_INTERVAL": 0.01}}
    )


class Lines:
    """The stdout lines of a child, read on a thread so every wait is bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def next(self, timeout: float = 30.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            err = ""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()[-2000:]
            raise AssertionError(
                f"no output from {self.proc.args[2:4]} in {timeout}s; "
                f"exit={self.proc.poll()} stderr={err}"
            ) from None


def spawn(procs, mode: str, app: str, kind: str, *args: Any) -> Lines:
    proc = procs.spawn([WORKER, mode, app, locks_json(kind), *map(str, args)])
    return Lines(proc)


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def finish(procs, timeout: float = 60.0) -> None:
    for code, _out, err in procs.wait_all(timeout):
        assert code == 0, err[-2000:]


# SQLite is left out here only for the suite's time budget (it passes, in ~40 s on
# a loaded 2-core machine: its waiters poll); it is in the two tests below.
@pytest.mark.parametrize("kind", BACKENDS[:2])
def test_four_processes_count_to_800_under_run_exclusive(procs, unique_name, kind):
    """4 processes x 200 read-modify-writes of one file inside run_exclusive = 800."""
    counter = Path(settings.RUN_DIR) / f"{unique_name}.counter"
    counter.write_text("0")
    workers = [spawn(procs, "count", unique_name, kind, 200, counter) for _ in range(4)]
    for worker in workers:
        assert worker.next(timeout=80) == "done"
    finish(procs)
    assert int(counter.read_text()) == 800


@pytest.mark.parametrize("kind", BACKENDS)
def test_processes_racing_try_acquire_have_exactly_one_winner(procs, unique_name, kind):
    """N processes released at the same instant: exactly one try_acquire wins."""
    go = Path(settings.RUN_DIR) / f"{unique_name}.go"
    workers = [spawn(procs, "race", unique_name, kind, go) for _ in range(4)]
    for worker in workers:
        assert worker.next() == "ready"
    go.write_text("go")
    results = [worker.next() for worker in workers]
    finish(procs)
    assert sorted(r.split()[0] for r in results) == ["lost", "lost", "lost", "won"]


@pytest.mark.parametrize("kind", BACKENDS)
def test_kill_9_of_the_holder_hands_the_lock_over_after_its_ttl(
    procs, unique_name, kind
):
    """After kill -9 of the holder the waiter gets the lock once the TTL has passed,
    never before, and with a higher fence."""
    ttl = 1.5
    holder = spawn(procs, "hold", unique_name, kind, "victim", ttl)
    held = holder.next().split()
    assert held[0] == "held", held
    held_fence, held_at = int(held[1]), float(held[2])
    waiter = spawn(procs, "wait", unique_name, kind, "victim", 30)
    assert waiter.next() == "waiting"
    os.killpg(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(timeout=10)
    got = waiter.next(timeout=30).split()
    assert got[0] == "got", got
    got_fence, got_at = int(got[1]), float(got[2])
    assert got_fence > held_fence
    assert got_at >= held_at + ttl - 0.05  # the dead holder's lease was respected
    assert waiter.proc.wait(timeout=10) == 0


@pytest.mark.parametrize("kind", BACKENDS[:2])
def test_a_waiter_killed_in_the_queue_does_not_stall_it(procs, unique_name, kind):
    """kill -9 of the first waiter: after the release the second waiter still gets
    the lock within its wait (the dead one's place lapses after 3 s)."""
    manager = make_app(
        unique_name, {"LOCKS": json.loads(locks_json(kind))}
    ).lock_manager
    try:
        held = manager.acquire("queue", ttl=30)

        def queued() -> int:
            return sum(i.waiters for i in manager.list_locks() if i.key == "queue")

        doomed = spawn(procs, "wait", unique_name, kind, "queue", 30)
        assert doomed.next() == "waiting"
        assert wait_until(lambda: queued() == 1, 30)
        patient = spawn(procs, "wait", unique_name, kind, "queue", 10)
        assert patient.next() == "waiting"
        assert wait_until(lambda: queued() == 2, 30)
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=10)
        held.release()
        got = patient.next(timeout=20).split()
        assert got[0] == "got", got
        assert int(got[1]) > held.fence
        assert patient.proc.wait(timeout=10) == 0
    finally:
        manager.app.stop()
