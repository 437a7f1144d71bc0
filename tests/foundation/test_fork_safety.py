"""A fork never lands inside a background thread's database call."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest

from mega_cluster import node

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")


def _fork_and_wait(child) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            # A hung child is killed instead of hanging the test: the default
            # action, since a Python handler (pytest-timeout's) cannot run while
            # the child is blocked inside C code.
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(2)
            code = child()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def test_children_forked_during_sqlite_work_under_fork_guard_never_hang(tmp_path):
    """Threads that open and close SQLite under ``node.fork_guard()`` while the
    main thread forks 60 times: every child opens SQLite at once. (Without the
    guard a quarter of such children hang in ``sqlite3.connect`` on a mutex the
    parent's thread held at the fork.)"""
    path = str(tmp_path / "fork.sqlite3")
    sqlite3.connect(path).close()
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with node.fork_guard():
                conn = sqlite3.connect(path)
                conn.execute("SELECT 1").fetchall()
                conn.close()

    def child() -> int:
        conn = sqlite3.connect(path)
        conn.execute("SELECT 1")
        conn.close()
        return 0

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        statuses = [_fork_and_wait(child) for _ in range(60)]
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert statuses == [0] * 60, f"{sum(s != 0 for s in statuses)} children hung"


def test_fork_waits_for_guarded_work_and_keeps_new_work_out():
    """``fork()`` returns only after the guarded section in flight has ended, and a
    section starting meanwhile waits for the fork; the child can use the guard."""
    inside = threading.Event()
    marks: dict[str, float] = {}

    def work() -> None:
        with node.fork_guard():
            inside.set()
            time.sleep(0.3)
            marks["left"] = time.monotonic()

    thread = threading.Thread(target=work)
    thread.start()
    assert inside.wait(5)

    def child() -> int:
        with node.fork_guard():  # a fresh gate: not stuck in the parent's fork
            return 0

    status = _fork_and_wait(child)
    marks["forked"] = time.monotonic()
    thread.join(5)
    assert status == 0
    assert marks["forked"] >= marks["left"]
    with node.fork_guard():  # open again in the parent after the fork
        pass
