"""The measuring process of one run of ``bench/tasks.py``: enqueues, waits, reads.

``python -m bench.taskbench.measure TASKS SAMPLES GAP OUT``, with the settings of one
system (``bench.taskbench.settings``) and its workers already started by the caller.
Writes a JSON dict to ``OUT``: ``enqueue_rate``, ``ran_during``, ``rate``,
``latencies`` (ms), or ``error``.

* warm-up: 20 tasks, waited for (the workers' start, connections, imports);
* end to end: ``TASKS`` tasks enqueued back to back; from the first ``enqueue()``
  call to the latest ``finished_at`` of their results (each result is read once
  every task has run, and must be SUCCESSFUL); ``ran_during``: how many of them
  had run when the last ``enqueue()`` returned;
* latency: one task at a time, ``SAMPLES`` times, from the ``enqueue()`` call to
  its result's ``finished_at``; a random pause of up to ``GAP`` seconds before each,
  so that a worker that polls is met at any point of its interval.

With a fifth argument ``alone`` (no worker started): only ``TASKS`` enqueues, timed
after 20 to warm up; ``OUT`` gets ``enqueue_rate``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
from datetime import datetime
from typing import Any


class Ran:
    """Counts the datagrams the task sends when it runs."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.count = self.base = self.target = 0
        self.cond = threading.Condition()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            self.sock.recv(64)
            with self.cond:
                self.count += 1
                self.cond.notify_all()

    def wait(self, count: int, timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.count >= count, timeout):
                raise TimeoutError(
                    f"{what}: {self.count - self.base} of {self.target} ran "
                    f"in {timeout:.0f} s"
                )

    def expect(self, n: int) -> int:
        """The count to wait for once ``n`` more tasks ran."""
        with self.cond:
            self.base, self.target = self.count, n
            return self.count + n


def finished(backend: Any, ids: list[str], timeout: float) -> list[datetime]:
    """Each result's ``finished_at``, once all are final (bounded)."""
    from django.tasks import TaskResultStatus

    deadline = time.monotonic() + timeout
    done: dict[str, datetime] = {}
    pending = list(ids)
    while pending:
        left = []
        for result_id in pending:
            result = backend.get_result(result_id)
            if result.status == TaskResultStatus.SUCCESSFUL:
                done[result_id] = result.finished_at
            elif result.status == TaskResultStatus.FAILED:
                raise RuntimeError(f"task {result_id} failed: {result.errors}")
            else:
                left.append(result_id)
        pending = left
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} results not final in {timeout} s")
            time.sleep(0.002)
    return [done[result_id] for result_id in ids]


def enqueue_only(tasks: int) -> dict[str, Any]:
    """``TASKS`` enqueues with no worker running (after 20 to warm up): what the
    enqueuing process alone can do, with nothing else on the machine's CPUs."""
    from bench.taskbench.jobs import noop

    for _ in range(20):
        noop.enqueue()
    start = time.time()
    for _ in range(tasks):
        noop.enqueue()
    return {"enqueue_rate": tasks / (time.time() - start)}


def measure(tasks: int, samples: int, gap: float) -> dict[str, Any]:
    from bench.taskbench.jobs import noop

    backend = noop.get_backend()
    ran = Ran(os.environ["MC_BENCH_SOCK"])

    target = ran.expect(20)
    warm = [noop.enqueue().id for _ in range(20)]
    ran.wait(target, 120, "warm-up (workers starting)")
    finished(backend, warm, 60)

    target = ran.expect(tasks)
    start = time.time()
    ids = [noop.enqueue().id for _ in range(tasks)]
    enqueued = time.time()
    ran_during = ran.count - ran.base
    ran.wait(target, 600, f"{tasks} tasks")
    end = max(finished(backend, ids, 120)).timestamp()

    latencies = []
    for _ in range(samples):
        time.sleep(random.uniform(0, gap))
        target = ran.expect(1)
        sent = time.time()
        result_id = noop.enqueue().id
        ran.wait(target, 60, "latency sample")
        (done,) = finished(backend, [result_id], 60)
        latencies.append((done.timestamp() - sent) * 1000)
    return {
        "enqueue_rate": tasks / (enqueued - start),
        "ran_during": ran_during,
        "rate": tasks / (end - start),
        "latencies": latencies,
    }


def main() -> None:
    tasks, samples, gap, out = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        float(sys.argv[3]),
        sys.argv[4],
    )
    import django

    django.setup()
    try:
        if sys.argv[5:] == ["alone"]:
            result = enqueue_only(tasks)
        else:
            result = measure(tasks, samples, gap)
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    with open(out, "w") as f:
        json.dump(result, f)
    os._exit(0)  # a cluster app's threads need no orderly stop here


if __name__ == "__main__":
    main()
