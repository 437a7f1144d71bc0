"""The database schedule store: nodes racing for the same ticks on SQLite and
PostgreSQL queue each once, the event in the same transaction as the run row."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from mega_cluster.models import QueuedEvent, ScheduleRun
from mega_cluster.schedules import get_schedules
from mega_cluster.testing import make_app, wait_until
from tests.databases import DATABASES


@pytest.fixture(params=DATABASES)
def alias(request):
    return request.param


def nodes(name, alias, count=3):
    settings = {
        "EVENT_QUEUE": {
            "BACKEND": "database",
            "OPTIONS": {"DATABASE": alias},
            "CONSUME": False,
        },
        "SCHEDULES": {
            "JOBS": {"beat": {"FUNCTION": "tests.schedules.recorded.note", "EVERY": 1}}
        },
    }
    return [make_app(name, settings, node_id=f"n{i}") for i in range(count)]


def test_racing_nodes_queue_each_tick_once(alias, unique_name):
    apps = nodes(unique_name, alias)
    queued: list = []
    stop = threading.Event()
    errors: list = []

    def node(app):
        schedules = get_schedules(app)
        try:
            while not stop.is_set():
                queued.extend(schedules.tick())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=node, args=(app,)) for app in apps]
    try:
        for thread in threads:
            thread.start()
        time.sleep(3.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for app in apps:
            app.stop()
    assert not errors, errors
    ticks = Counter(run.tick for run in queued)
    assert ticks and max(ticks.values()) == 1, ticks
    assert len(ticks) >= 2
    rows = ScheduleRun.objects.using(alias).filter(app_name=unique_name)
    assert sorted(r.tick for r in rows) == sorted(ticks)
    events = set(
        QueuedEvent.objects.using(alias)
        .filter(app_name=unique_name, channel="mc.schedule.beat")
        .values_list("id", flat=True)
    )
    assert events == {r.event_id for r in rows}  # one event per run, same commit
    first, last = min(ticks), max(ticks)
    assert len(ticks) == int((last - first).total_seconds()) + 1  # none skipped


def test_pause_is_cluster_wide_and_run_now_is_recorded(alias, unique_name):
    a, b = nodes(unique_name, alias, 2)
    try:
        get_schedules(a).pause("beat")
        time.sleep(1.1)
        assert get_schedules(b).tick() == []
        (status,) = get_schedules(b).status()
        assert status.paused
        run = get_schedules(b).run_now("beat")
        assert QueuedEvent.objects.using(alias).filter(id=run.event_id).exists()
        get_schedules(a).resume("beat")
        assert [r.manual for r in get_schedules(a).runs("beat")] == [True]
    finally:
        a.stop()
        b.stop()


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_lost_attempts_spent_its_budget_is_dead(unique_name):
    """MAX_RETRIES 0: the worker running the tick dies (its lease lapses); the
    queue dead-letters the event without running it, and the run says so."""
    settings = {
        "EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05},
        "SCHEDULES": {
            "JOBS": {
                "once": {
                    "FUNCTION": "tests.schedules.recorded.note",
                    "EVERY": 3600,
                    "MAX_RETRIES": 0,
                }
            }
        },
    }
    publisher = make_app(
        unique_name,
        {**settings, "EVENT_QUEUE": {**settings["EVENT_QUEUE"], "CONSUME": False}},
        node_id="pub",
    )
    worker = make_app(unique_name, settings, node_id="worker")
    try:
        run = get_schedules(publisher).run_now("once")
        backend = publisher.event_queue.backend
        (claimed,) = backend.claim("mc.schedule.once", 1, lease=0.05)  # then dies
        assert claimed.id == run.event_id
        time.sleep(0.2)
        get_schedules(worker).subscribe()
        worker.event_queue.configure_worker()
        worker.start()
        wait_until(
            lambda: get_schedules(worker).runs("once")[0].status == "dead",
            10,
            "the run to be dead",
        )
        (dead,) = get_schedules(worker).runs("once")
        assert dead.attempts == 2 and dead.error
        assert [d.id for d in worker.event_queue.dead_letters()] == [run.event_id]
    finally:
        worker.stop()
        publisher.stop()
