"""Helpers of the runworker cluster tests: spawn workers, read their attempt log."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.procs import ProcessGroup


class AttemptLog:
    """The lines the ``events-worker`` plugin writes: ready/start/done per attempt."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def lines(self) -> list[tuple[str, str, int, int, Any]]:
        rows = []
        for line in self.path.read_text().splitlines():
            what, event_id, attempt, pid, payload = line.split(" ", 4)
            rows.append((what, event_id, int(attempt), int(pid), json.loads(payload)))
        return rows

    def ready_pids(self) -> set[int]:
        return {pid for what, _, _, pid, _ in self.lines() if what == "ready"}

    def by_event(self) -> dict[str, list[tuple[str, int, int]]]:
        events: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        for what, event_id, attempt, pid, _ in self.lines():
            if what != "ready":
                events[event_id].append((what, attempt, pid))
        return events

    def running_in(self, pid: int) -> list[str]:
        """Events whose latest attempt started in ``pid`` and has not finished."""
        open_ = []
        for event_id, rows in self.by_event().items():
            starts = [r for r in rows if r[0] == "start" and r[2] == pid]
            done = {(r[1], r[2]) for r in rows if r[0] == "done"}
            open_ += [event_id for _, a, p in starts if (a, p) not in done]
        return open_


def spawn_workers(
    procs: ProcessGroup, n: int, env: dict[str, str], *args: str
) -> list[Any]:
    return [
        # not -v 2: it prints two lines per event on stdout, a pipe read only at
        # the end (1,000 events would fill it and block the worker)
        procs.spawn(["manage.py", "runworker", *args], env)
        for _ in range(n)
    ]


def wait_until(predicate, timeout: float, what: str, procs: list[Any] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate(timeout=5)
                raise AssertionError(
                    f"worker exited early ({proc.returncode}): {err[-3000:]}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def terminate(proc: Any, timeout: float = 30) -> tuple[int, str, str]:
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
