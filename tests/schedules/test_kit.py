"""Periodic jobs on the testing kit's cluster: ticks run once, on the cluster's
clock, with no sleeping."""

from __future__ import annotations

import pytest

from tests.schedules import recorded

pytestmark = pytest.mark.django_db(transaction=True)


def jobs(**specs):
    return {"SCHEDULES": {"JOBS": specs}}


@pytest.fixture(autouse=True)
def _clean():
    recorded.RUNS.clear()
    recorded.FAILURES["left"] = 0
    yield
    recorded.RUNS.clear()


def test_every_tick_runs_once_across_three_nodes(cluster):
    cluster.configure(
        plugins=[],
        settings=jobs(beat={"FUNCTION": "tests.schedules.recorded.note", "EVERY": 10}),
    )
    cluster(3)
    attempts = cluster.advance_schedules(100)
    ticks = [tick for _, tick in recorded.RUNS]
    assert len(ticks) == 10
    assert len(set(ticks)) == 10
    assert all(t.second % 10 == 0 and t.microsecond == 0 for t in ticks)
    assert {a.node for a in attempts} == {"node-1", "node-2", "node-3"}
    assert all(a.outcome == "succeeded" for a in attempts)
