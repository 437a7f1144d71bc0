"""The job of the multi-process schedule tests: a line per start and end of a run
in ``MC_BEAT_LOG`` (``start|done <tick> <attempt> <pid>``); ``MC_BEAT_SLEEP``
seconds between them."""

from __future__ import annotations

import os
import time


def _log(what: str, run) -> None:
    with open(os.environ["MC_BEAT_LOG"], "a") as fh:
        fh.write(f"{what} {run.tick.isoformat()} {run.attempt} {os.getpid()}\n")


def beat(run) -> None:
    _log("start", run)
    if os.environ.get("MC_BEAT_SLEEP"):  # sleep(0) fails under libfaketime
        time.sleep(float(os.environ["MC_BEAT_SLEEP"]))
    _log("done", run)
