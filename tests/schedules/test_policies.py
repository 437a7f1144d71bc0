"""What decides a tick and what a run records, on the testing kit's cluster (the
memory queue and schedule store, on the cluster's clock)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from mega_cluster.schedules import get_schedules
from tests.schedules import recorded

pytestmark = pytest.mark.django_db(transaction=True)

NOTE = "tests.schedules.recorded.note"
FLAKY = "tests.schedules.recorded.flaky"


@pytest.fixture(autouse=True)
def _clean():
    recorded.RUNS.clear()
    recorded.FAILURES["left"] = 0
    yield
    recorded.RUNS.clear()


def start(cluster, nodes=2, **jobs):
    cluster.configure(plugins=[], settings={"SCHEDULES": {"JOBS": jobs}})
    started = cluster(nodes)
    return started, get_schedules(started[0])


def align(cluster, every, past=5.0):
    """Move the clock to ``past`` seconds after a multiple of ``every``."""
    now = cluster.clock.time()
    cluster.clock.advance_to(math.ceil(now / every) * every + past)
    cluster.run_events()
    recorded.RUNS.clear()


def test_ticks_missed_beyond_the_grace_are_skipped(cluster):
    start(cluster, beat={"FUNCTION": NOTE, "EVERY": 10, "GRACE": 30})
    align(cluster, 10)
    cluster.advance(300)  # no worker looked for 300 s
    cluster.run_events()
    now = cluster.clock.time()
    assert sorted(t.timestamp() for _, t in recorded.RUNS) == [
        now - 25,
        now - 15,
        now - 5,
    ]


def test_missed_latest_runs_the_latest_missed_tick_once(cluster):
    start(
        cluster,
        beat={"FUNCTION": NOTE, "EVERY": 10, "GRACE": 30, "MISSED": "latest"},
    )
    align(cluster, 10)
    cluster.advance(300)
    cluster.run_events()
    now = cluster.clock.time()
    assert sorted(t.timestamp() for _, t in recorded.RUNS) == [
        now - 35,
        now - 25,
        now - 15,
        now - 5,
    ]


def test_ticks_while_paused_never_run(cluster):
    _, schedules = start(cluster, beat={"FUNCTION": NOTE, "EVERY": 10})
    schedules.pause("beat")
    assert cluster.advance_schedules(100) == []
    (status,) = schedules.status()
    assert status.paused and status.next_run is None
    schedules.resume("beat")
    assert len(cluster.advance_schedules(30)) == 3
    assert len(recorded.RUNS) == 3


def test_run_now_queues_a_manual_run(cluster):
    _, schedules = start(cluster, beat={"FUNCTION": NOTE, "EVERY": 3600})
    run = schedules.run_now("beat")
    assert run.manual and run.status == "queued"
    (attempt,) = cluster.run_events()
    assert attempt.payload["manual"] is True
    (latest,) = schedules.runs("beat", limit=1)
    assert (latest.status, latest.manual, latest.node) == (
        "succeeded",
        True,
        attempt.node,
    )
    with pytest.raises(KeyError, match="No periodic job 'nope'"):
        schedules.run_now("nope")


def test_a_failing_run_is_retried_then_dead_lettered(cluster):
    (a, _), schedules = start(
        cluster, job={"FUNCTION": FLAKY, "EVERY": 60, "MAX_RETRIES": 1}
    )
    align(cluster, 60, past=59)
    recorded.FAILURES["left"] = 5
    attempts = cluster.advance_schedules(1)
    attempts += cluster.run_events(advance=True)
    assert [x.outcome for x in attempts] == ["retry", "dead"]
    (run,) = schedules.runs("job", limit=1)
    assert (run.status, run.attempts) == ("dead", 2)
    assert "ConnectionError: service unavailable" in run.error
    assert [d.channel for d in a.event_queue.dead_letters()] == ["mc.schedule.job"]


def test_a_failed_attempt_then_a_success(cluster):
    _, schedules = start(cluster, job={"FUNCTION": FLAKY, "EVERY": 60})
    align(cluster, 60, past=59)
    recorded.FAILURES["left"] = 1
    attempts = cluster.advance_schedules(1) + cluster.run_events(advance=True)
    assert [x.outcome for x in attempts] == ["retry", "succeeded"]
    (run,) = schedules.runs("job", limit=1)
    assert (run.status, run.attempts, run.error) == ("succeeded", 2, "")


def test_no_overlap_skips_a_tick_while_the_previous_run_holds_the_lock(cluster):
    (a, _), schedules = start(
        cluster, job={"FUNCTION": NOTE, "EVERY": 10, "OVERLAP": False}
    )
    align(cluster, 10)
    held = a.lock_manager.acquire("mc.schedule:job")  # a run still running
    cluster.advance_schedules(10)
    assert recorded.RUNS == []
    (run,) = schedules.runs("job", limit=1)
    assert (run.status, run.error) == ("skipped", "the previous run was still running")
    held.release()
    cluster.advance_schedules(10)
    assert len(recorded.RUNS) == 1
    assert a.lock_manager.try_acquire("mc.schedule:job") is not None  # released


def test_jitter_delays_each_tick_the_same_on_every_node(cluster):
    _, schedules = start(cluster, 3, job={"FUNCTION": NOTE, "EVERY": 60, "JITTER": 30})
    job = schedules.job("job")
    align(cluster, 60, past=0.5)
    attempts = cluster.advance_schedules(600)
    assert len(attempts) == 10
    for attempt in attempts:
        tick = dt.datetime.fromisoformat(attempt.payload["tick"])
        offset = job.offset(tick)
        assert 0 <= offset < 30
        assert attempt.at == pytest.approx(tick.timestamp() + offset, abs=1e-3)
    assert (
        len(
            {job.offset(dt.datetime.fromisoformat(a.payload["tick"])) for a in attempts}
        )
        > 1
    )


def test_status_shows_next_and_last_run(cluster):
    _, schedules = start(cluster, beat={"FUNCTION": NOTE, "EVERY": 60})
    align(cluster, 60)
    cluster.advance_schedules(60)
    (status,) = schedules.status()
    assert status.job.schedule == "every 60s"
    assert status.last_run.status == "succeeded"
    assert status.next_run == status.last_run.tick + dt.timedelta(seconds=60)


def test_an_async_job_runs(cluster):
    start(cluster, job={"FUNCTION": "tests.schedules.recorded.anote", "EVERY": 5})
    align(cluster, 5, past=1)
    assert [a.outcome for a in cluster.advance_schedules(10)] == ["succeeded"] * 2
