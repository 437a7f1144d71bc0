"""Job functions the schedule tests declare: each run is noted in ``RUNS``."""

from __future__ import annotations

RUNS: list[tuple[str, object]] = []
FAILURES = {"left": 0}


def note(run):
    RUNS.append((run.job, run.tick))


def flaky(run):
    RUNS.append((run.job, run.tick))
    if FAILURES["left"]:
        FAILURES["left"] -= 1
        raise ConnectionError("service unavailable")


async def anote(run):
    RUNS.append((run.job, run.tick))
