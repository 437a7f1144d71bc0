"""Real ``runworker`` processes consume the event queue: ``database`` on PostgreSQL
and ``celery`` on RabbitMQ (store on PostgreSQL; a row per event, and
``BOOKKEEPING = "failures"``)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from mega_cluster.testing import make_app
from tests.events.conftest import celery_options

from .events_support import AttemptLog, spawn_workers, terminate, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.django_db(databases=["default", "postgres"], transaction=True),
]


@pytest.fixture(
    params=[
        pytest.param("database", id="database-postgres"),
        pytest.param(
            "celery",
            id="celery-rabbitmq",
            marks=[pytest.mark.celery, pytest.mark.rabbitmq],
        ),
        pytest.param(
            "celery-failures",
            id="celery-failures-rabbitmq",
            marks=[pytest.mark.celery, pytest.mark.rabbitmq],
        ),
    ]
)
def setup(request, unique_name, tmp_path):
    backend = request.param
    log = AttemptLog(tmp_path / "attempts.log")
    env = {
        "MC_CHILD_SETTINGS": "tests.events.worker_settings",
        "MC_APP_NAME": unique_name,
        "MC_EVENTS_LOG": str(log.path),
        "MC_EVENTS_BACKEND": backend,
    }
    options = {"DATABASE": "postgres"}
    if backend.startswith("celery"):
        env["MC_EVENTS_BACKEND"] = "celery"
        env["MC_EVENTS_OPTIONS"] = json.dumps(celery_options("default", backend))
        options = celery_options("postgres", backend)
        backend = "celery"
    monitor = make_app(
        unique_name, {"EVENT_QUEUE": {"BACKEND": backend, "OPTIONS": options}}
    )
    yield log, env, monitor.event_queue
    monitor.stop()


def _stats(queue):
    return queue.stats("jobs").get("jobs", {})


def _finished(queue, log, env, count):
    """Whether ``count`` events ran to success. With ``BOOKKEEPING = "failures"`` a
    ``kill -9`` loses the victim's success counts of its last second (documented in
    docs/events.md, "What failures gives up": the events ran), so there the log of
    attempts decides, and the stats must show nothing pending or running."""
    if '"failures"' not in env.get("MC_EVENTS_OPTIONS", ""):
        return _stats(queue).get("succeeded") == count
    done = [rows for rows in log.by_event().values() if rows[-1][0] == "done"]
    stats = _stats(queue)
    return len(done) == count and not stats.get("pending") and not stats.get("running")


def test_two_workers_process_1000_events_exactly_once(procs, setup):
    """1,000 events published by a third process: each processed exactly once, by
    both workers between them; SIGTERM stops both cleanly."""
    log, env, queue = setup
    workers = spawn_workers(procs, 2, env)
    wait_until(lambda: len(log.ready_pids()) == 2, 60, "two ready workers", workers)
    publisher = procs.spawn(
        ["tests/cluster/events_publish.py"], {**env, "MC_EVENTS_COUNT": "1000"}
    )
    out, err = publisher.communicate(timeout=60)
    assert publisher.returncode == 0, err[-3000:]
    assert out.strip() == "published 1000"
    wait_until(
        lambda: _stats(queue).get("succeeded") == 1000, 90, "1000 events", workers
    )
    for proc in workers:
        code, _, err = terminate(proc)
        assert code == 0, err[-3000:]
    done = [row for row in log.lines() if row[0] == "done"]
    assert len(done) == 1000
    assert Counter(row[4] for row in done) == Counter(range(1000))
    assert {row[2] for row in done} == {1}
    assert {row[3] for row in done} == {w.pid for w in workers}
    assert _stats(queue) == {
        "pending": 0,
        "running": 0,
        "succeeded": 1000,
        "failed": 0,
        "dead": 0,
    }


def test_kill_9_mid_event_is_redelivered(procs, setup):
    """A worker killed with SIGKILL mid-event: the event is redelivered once its
    lease lapses and completes on the other worker, as attempt 2."""
    log, env, queue = setup
    env = {**env, "MC_EVENTS_SLEEP": "0.3", "MC_EVENTS_LEASE": "1.5"}
    victim = spawn_workers(procs, 1, {**env, "MC_EVENTS_CONCURRENCY": "2"})[0]
    wait_until(lambda: log.ready_pids(), 60, "the first worker", [victim])
    publisher = procs.spawn(
        ["tests/cluster/events_publish.py"], {**env, "MC_EVENTS_COUNT": "20"}
    )
    assert publisher.wait(timeout=60) == 0
    lost = wait_until(lambda: log.running_in(victim.pid), 30, "an event in flight")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    lost = set(log.running_in(victim.pid))
    assert lost
    survivor = spawn_workers(procs, 1, env)[0]
    wait_until(lambda: _finished(queue, log, env, 20), 60, "20 events", [survivor])
    events = log.by_event()
    for event_id in lost:
        assert ("done", 2, survivor.pid) in events[event_id], events[event_id]
    assert len(events) == 20
    assert all(any(r[0] == "done" for r in rows) for rows in events.values())
    assert _stats(queue)["dead"] == 0
    code, _, err = terminate(survivor)
    assert code == 0, err[-3000:]


def test_sigterm_drains_in_flight_and_loses_nothing(procs, setup):
    """SIGTERM: the worker finishes its running events before exiting 0; the other
    worker processes the rest; nothing is lost or run twice."""
    log, env, queue = setup
    env = {**env, "MC_EVENTS_SLEEP": "0.4", "MC_EVENTS_CONCURRENCY": "2"}
    workers = spawn_workers(procs, 2, env)
    wait_until(lambda: len(log.ready_pids()) == 2, 60, "two ready workers", workers)
    publisher = procs.spawn(
        ["tests/cluster/events_publish.py"], {**env, "MC_EVENTS_COUNT": "30"}
    )
    assert publisher.wait(timeout=60) == 0
    first = workers[0]
    wait_until(lambda: log.running_in(first.pid), 30, "events in flight")
    code, _, err = terminate(first)
    assert code == 0, err[-3000:]
    assert "draining" in err
    assert log.running_in(first.pid) == []  # everything it started, it finished
    wait_until(
        lambda: _stats(queue).get("succeeded") == 30, 60, "30 events", workers[1:]
    )
    done = [row for row in log.lines() if row[0] == "done"]
    assert Counter(row[4] for row in done) == Counter(range(30))
    assert {row[2] for row in done} == {1}
    code, _, err = terminate(workers[1])
    assert code == 0, err[-3000:]


def test_second_sigterm_forces_exit_and_the_event_is_redelivered(procs, setup):
    """A second SIGTERM during the drain exits at once with status 1; the event
    it was running is completed later by another worker (attempt 2)."""
    log, env, queue = setup
    slow = {**env, "MC_EVENTS_SLEEP": "30", "MC_EVENTS_LEASE": "1.5"}
    victim = spawn_workers(procs, 1, {**slow, "MC_EVENTS_CONCURRENCY": "1"})[0]
    wait_until(lambda: log.ready_pids(), 60, "the worker", [victim])
    publisher = procs.spawn(
        ["tests/cluster/events_publish.py"], {**env, "MC_EVENTS_COUNT": "1"}
    )
    assert publisher.wait(timeout=60) == 0
    [event_id] = wait_until(lambda: log.running_in(victim.pid), 30, "the event")
    os.killpg(victim.pid, signal.SIGTERM)
    time.sleep(0.5)  # let the first signal's handler run (stderr is read at exit)
    os.killpg(victim.pid, signal.SIGTERM)
    _, err = victim.communicate(timeout=10)
    assert victim.returncode == 1, err[-3000:]
    assert "without draining" in err
    survivor = spawn_workers(procs, 1, env)[0]
    wait_until(lambda: _stats(queue).get("succeeded") == 1, 60, "the event", [survivor])
    assert ("done", 2, survivor.pid) in log.by_event()[event_id]
    code, _, err = terminate(survivor)
    assert code == 0, err[-3000:]


def test_the_worker_that_finds_a_lost_attempt_logs_it(procs, setup):
    """A worker killed with SIGKILL mid-event: the runworker that takes the event
    next logs that attempt 1 was lost (and counts it) before running attempt 2."""
    log, env, queue = setup
    # Slow enough that the first attempts still run once the publisher exited.
    env = {**env, "MC_EVENTS_SLEEP": "3", "MC_EVENTS_LEASE": "1.5"}
    victim = spawn_workers(procs, 1, env)[0]
    wait_until(lambda: log.ready_pids(), 60, "the first worker", [victim])
    publisher = procs.spawn(
        ["tests/cluster/events_publish.py"], {**env, "MC_EVENTS_COUNT": "3"}
    )
    assert publisher.wait(timeout=60) == 0
    wait_until(lambda: log.running_in(victim.pid), 30, "an event in flight")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    lost = set(log.running_in(victim.pid))
    survivor = spawn_workers(procs, 1, env)[0]
    wait_until(lambda: _finished(queue, log, env, 3), 60, "3 events", [survivor])
    code, _, err = terminate(survivor)
    assert code == 0, err[-3000:]
    for event_id in lost:
        assert f"event {event_id} on channel jobs: attempt 1 was lost" in err, err
