"""The issue's full run, by hand (about 80 s; the suite runs the 15-tick version):
3 ``runworker`` nodes and a 1-second job for 60 ticks, every tick exactly once.

    MC_SCHEDULES_60=1 ./dev test tests/cluster/test_schedules_long.py -s
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from .test_schedules import assert_every_tick_once, env, start_workers, stop, wait_for

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("MC_SCHEDULES_60"), reason="by hand: MC_SCHEDULES_60=1"
    ),
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.django_db(databases=["default", "postgres"], transaction=True),
]

__all__ = ["env"]


def test_sixty_ticks_on_three_workers(procs, env, unique_name):
    log, environ = env
    workers = start_workers(procs, environ)
    started = time.monotonic()
    wait_for(lambda: len(log.done()) >= 60, 110, "60 ticks", workers)
    elapsed = time.monotonic() - started
    stop(workers)
    ticks = assert_every_tick_once(log, unique_name)
    ran = Counter(pid for what, _, _, pid in log.rows() if what == "done")
    print(
        f"\n{len(ticks)} ticks in {elapsed:.1f}s, each exactly once; runs per node: "
        f"{sorted(ran.values())}"
    )
