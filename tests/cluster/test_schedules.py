"""Periodic jobs on real ``runworker`` processes (PostgreSQL, ``database`` event
queue): three nodes, no leader, each tick of a 1-second job runs exactly once; a
node killed in the middle of a run: that tick runs again, once; a node whose
clock is 30 s ahead (libfaketime) changes nothing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mega_cluster.models import ScheduleRun
from tests.cluster.test_locks import Lines
from tests.cluster.test_locks_clock_skew import faketime  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.django_db(databases=["default", "postgres"], transaction=True),
]

SETTINGS = "tests.schedules.worker_settings"


class BeatLog:
    """The job's log: ``start|done <tick> <attempt> <pid>`` per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def rows(self) -> list[tuple[str, dt.datetime, int, int]]:
        rows = []
        for line in self.path.read_text().splitlines():
            what, tick, attempt, pid = line.split()
            rows.append((what, dt.datetime.fromisoformat(tick), int(attempt), int(pid)))
        return rows

    def done(self) -> Counter[dt.datetime]:
        return Counter(tick for what, tick, _, _ in self.rows() if what == "done")


def start_workers(procs, env, count=3, skewed=None, faketime_path=None):
    workers = []
    for i in range(count):
        extra = dict(env)
        if skewed is not None and i == 0:
            extra.update(
                LD_PRELOAD=faketime_path,
                FAKETIME=skewed,
                FAKETIME_DONT_FAKE_MONOTONIC="1",
            )
        workers.append(Lines(procs.spawn(["manage.py", "runworker"], extra)))
    for worker in workers:  # each says so once its apps started
        line = worker.next(timeout=90)
        assert "started on node" in line, line
    return workers


def wait_for(predicate, timeout, what, workers=()):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        for worker in workers:
            if worker.proc.poll() is not None:
                raise AssertionError(
                    f"a worker exited ({worker.proc.returncode}): "
                    f"{worker.proc.stderr.read()[-3000:]}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return value


def stop(workers, timeout=60):
    for worker in workers:
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGTERM)
    for worker in workers:
        worker.proc.wait(timeout)


def runs(app_name):
    return list(
        ScheduleRun.objects.using("postgres")
        .filter(app_name=app_name, job="beat")
        .order_by("tick")
    )


def assert_every_tick_once(log, app_name, every=1):
    """Every tick from the first to the last ran to its end exactly once, with
    one run row each, and none was queued before its time by the server's clock."""
    done = log.done()
    twice = {tick: n for tick, n in done.items() if n > 1}
    assert not twice, f"ticks that ran more than once: {twice}"
    ticks = sorted(done)
    expected = [
        ticks[0] + dt.timedelta(seconds=every * i)
        for i in range(int((ticks[-1] - ticks[0]).total_seconds()) // every + 1)
    ]
    assert ticks == expected, f"missing ticks: {sorted(set(expected) - set(ticks))}"
    rows = runs(app_name)
    finished = [r for r in rows if r.tick <= ticks[-1]]
    assert [r.tick for r in finished] == ticks
    assert {r.status for r in finished} == {"succeeded"}
    early = [r.tick for r in rows if r.queued_at < r.tick]
    assert not early, f"ticks queued before their time: {early}"
    return ticks


@pytest.fixture
def env(unique_name, tmp_path):
    log = BeatLog(tmp_path / "beat.log")
    return log, {
        "MC_CHILD_SETTINGS": SETTINGS,
        "MC_APP_NAME": unique_name,
        "MC_BEAT_LOG": str(log.path),
    }


def test_three_workers_run_each_tick_of_a_1_second_job_once(procs, env, unique_name):
    log, environ = env
    workers = start_workers(procs, environ)
    wait_for(lambda: len(log.done()) >= 15, 90, "15 ticks", workers)
    stop(workers)
    ticks = assert_every_tick_once(log, unique_name)
    assert len(ticks) >= 15
    worker_pids = {w.proc.pid for w in workers}
    assert {pid for *_, pid in log.rows()} <= worker_pids


def test_a_tick_whose_node_is_killed_runs_again_once(procs, env, unique_name):
    """Runs take 3 s, ticks come every 2 s: the worker running one is killed
    (-9) mid-run; the tick's event lease lapses and another node runs it to its
    end, once; every other tick still ran exactly once."""
    log, environ = env
    environ.update(MC_BEAT_SLEEP="3", MC_BEAT_EVERY="2")
    workers = start_workers(procs, environ)

    def running():
        rows = log.rows()
        ended = {(tick, pid) for what, tick, _, pid in rows if what == "done"}
        return [
            (tick, pid)
            for what, tick, _, pid in rows
            if what == "start" and (tick, pid) not in ended
        ]

    tick, pid = wait_for(running, 90, "a run in progress", workers)[0]
    victim = next(w for w in workers if w.proc.pid == pid)
    os.killpg(pid, signal.SIGKILL)
    victim.proc.wait(10)
    survivors = [w for w in workers if w is not victim]
    wait_for(lambda: log.done()[tick] == 1, 60, f"tick {tick} run again", survivors)
    later = tick + dt.timedelta(seconds=6)
    wait_for(lambda: later in log.done(), 60, "three more ticks", survivors)
    stop(survivors)
    done = log.done()
    assert done[tick] == 1
    starts = [(a, p) for what, t, a, p in log.rows() if what == "start" and t == tick]
    assert starts[0] == (1, pid)
    assert len(starts) == 2 and starts[1][0] == 2 and starts[1][1] != pid, starts
    # ticks the killed node was running are the only ones that started twice
    by_tick = defaultdict(list)
    for what, t, _a, p in log.rows():
        if what == "start":
            by_tick[t].append(p)
    assert all(pid in by_tick[t] for t, ps in by_tick.items() if len(ps) > 1)
    assert_every_tick_once(log, unique_name, every=2)


def test_a_node_30_s_ahead_changes_nothing(procs, env, unique_name, faketime):  # noqa: F811
    """The skewed node alone runs the job on time by the server's clock (not 30 s
    early); with two more nodes every tick still runs exactly once."""
    log, environ = env
    (skewed,) = start_workers(
        procs, environ, count=1, skewed="+30s", faketime_path=faketime
    )
    wait_for(lambda: len(log.done()) >= 3, 60, "3 ticks on the skewed node", [skewed])
    assert {pid for *_, pid in log.rows()} == {skewed.proc.pid}
    workers = [skewed, *start_workers(procs, environ, count=2)]
    wait_for(lambda: len(log.done()) >= 18, 90, "15 more ticks", workers)
    stop(workers)
    assert_every_tick_once(log, unique_name)
    rows = runs(unique_name)
    assert all(r.started_at >= r.tick for r in rows if r.started_at is not None)
