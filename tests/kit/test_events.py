"""run_events(): the cluster's shared queue, run by the test on its clock."""

from __future__ import annotations

import threading
import time

import pytest

from mega_cluster.testing.clock import Clock
from plugins.async_tasks.models import Task
from plugins.async_tasks.plugin import CHANNEL

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tasks(cluster):
    """node "web" publishes only (CONSUME off), node "worker" consumes."""
    cluster.configure(
        plugins=["async_tasks"],
        settings={"EVENT_QUEUE": {"RETRY_BASE": 60, "RETRY_CAP": 3600}},
    )
    cluster(
        ["web", "worker"], node_settings={"web": {"EVENT_QUEUE": {"CONSUME": False}}}
    )
    return cluster.plugins("async_tasks")


def test_an_event_published_on_one_node_runs_on_a_consuming_one(cluster, tasks):
    web, worker = tasks
    task = web.start_task("count", {"steps": 2, "delay": 0})
    (attempt,) = cluster.run_events()
    assert (attempt.node, attempt.channel, attempt.outcome) == (
        "worker",
        CHANNEL,
        "succeeded",
    )
    assert attempt.payload == {"task": str(task.pk)}
    task.refresh_from_db()
    assert (task.status, task.node_id, task.result) == (
        "succeeded",
        "worker",
        {"counted": 2},
    )
    assert worker.event_queue.stats(CHANNEL)[CHANNEL]["succeeded"] == 1
    assert cluster.run_events() == []


def test_retries_follow_the_clock_and_take_no_wall_time(cluster, tasks, monkeypatch):
    """A failed attempt is due again after its backoff on the cluster's clock:
    not before the clock moves, at once after. Minutes of backoff pass without
    this thread sleeping once."""
    web, _ = tasks
    sleeps = []
    real_sleep = time.sleep
    me = threading.get_ident()

    def sleep(seconds):
        if threading.get_ident() == me:
            sleeps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    task = web.start_task("flaky", {"fail_times": 3}, max_retries=3)
    first = cluster.run_events()
    assert [a.outcome for a in first] == ["retry"]
    assert 30 <= first[0].retry_in <= 60  # RETRY_BASE 60 s, with jitter
    assert cluster.run_events() == []  # not due yet: the clock stands still
    cluster.advance(first[0].retry_in)
    assert [a.attempt for a in cluster.run_events()] == [2]
    rest = cluster.run_events(advance=True)
    assert [(a.attempt, a.outcome) for a in rest] == [(3, "retry"), (4, "succeeded")]
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("succeeded", 4)
    assert cluster.clock.monotonic() >= 30 + 60 + 120  # half of each backoff at least
    assert sleeps == []


def test_spent_retries_end_as_a_dead_letter(cluster, tasks):
    web, worker = tasks
    task = web.start_task("fail", {"error": "disk full"}, max_retries=1)
    attempts = cluster.run_events(advance=True)
    assert [a.outcome for a in attempts] == ["retry", "dead"]
    assert "disk full" in attempts[-1].error
    (letter,) = worker.event_queue.dead_letters(CHANNEL)
    assert (letter.id, letter.attempts) == (task.event_id, 2)
    assert cluster.attempts == attempts


def test_delayed_events_wait_for_the_clock(cluster):
    a, b = cluster(2, settings={"PLUGINS": []})
    ran = []
    b.event_queue.subscribe("later", process=lambda payload, ctx: ran.append(payload))
    a.event_queue.publish("later", {"n": 1}, delay=3600)
    assert cluster.run_events() == [] and ran == []
    cluster.advance(3599)
    assert cluster.run_events() == []
    cluster.advance(1)
    assert [x.node for x in cluster.run_events()] == ["node-2"] and ran == [{"n": 1}]


def test_the_idle_gate_and_the_node_filter_are_respected(cluster, tasks):
    web, worker = tasks
    worker.set_paused(True)
    cluster.deliver()
    web.start_task("count", {"steps": 1, "delay": 0})
    assert cluster.run_events() == []  # the gate is closed on the only consumer
    with pytest.raises(
        AssertionError, match=r"not idle:\n  event .* on 'async_tasks.run'"
    ):
        cluster.assert_idle()
    worker.set_paused(False)
    assert cluster.run_events(node="web") == []  # web does not consume
    assert [a.node for a in cluster.run_events(node=worker)] == ["worker"]
    assert Task.objects.get().status == "succeeded"


def test_consumers_take_turns_and_async_handlers_run(cluster):
    nodes = cluster(3, settings={"PLUGINS": []})
    ran = []

    async def process(payload, ctx):
        ran.append((ctx.attempt, payload))

    for node in nodes:
        node.event_queue.subscribe("jobs", process=process)
    for n in range(3):
        nodes[0].event_queue.publish("jobs", {"n": n})
    assert sorted(a.node for a in cluster.run_events()) == [
        "node-1",
        "node-2",
        "node-3",
    ]
    assert sorted(p["n"] for _, p in ran) == [0, 1, 2]


def test_the_clock_moves_only_forward_and_tells_its_listeners():
    clock = Clock(start=1000.0)
    seen = []
    remove = clock.on_advance(lambda old, new: seen.append((old, new)))
    assert clock.advance(5) == 1005.0 and clock.monotonic() == 5.0
    clock.advance_to(1000.0)  # in the past: no move
    remove()
    clock.advance(1)
    assert seen == [(1000.0, 1005.0), (1005.0, 1005.0)]
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            clock.advance(bad)
    with pytest.raises(TypeError):
        clock.advance("1")
