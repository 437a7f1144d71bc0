"""An idempotent sync-message handler across a replay between real processes: a
named receiver ``kill -9``ed after handling messages whose position it had not
saved yet replays them when it restarts; its plain handler runs them again, its
idempotent handler's effect (a counter in the database) stays exact."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import connections

from mega_cluster.inbox import get_inbox
from mega_cluster.testing import make_app

from .test_outbox import _wait, nodes  # noqa: F401 - the nodes fixture

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def counter(unique_name):
    """A table of the run's SQLite database (the children's ``default``)."""
    table = f"inbox_sync_{unique_name}".lower().replace("-", "_")
    with connections["default"].cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (k integer PRIMARY KEY, n integer)")
        cursor.executemany(
            f"INSERT INTO {table} VALUES (%s, 0)", [(i,) for i in range(1, 51)]
        )

    def counts():
        with connections["default"].cursor() as cursor:
            cursor.execute(f"SELECT k, n FROM {table}")
            return dict(cursor.fetchall())

    try:
        yield table, counts
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")


def test_a_replay_after_kill_9_repeats_no_idempotent_effect(nodes, counter):  # noqa: F811
    n, _server = nodes
    table, counts = counter
    # the first life saves its position only at start (polls every 600 s)
    env = {"MC_RECEIVER": "r1", "MC_INBOX_TABLE": table, "MC_HIGH_WATER_EVERY": "600"}
    proc = n.receiver("r1", env)
    sender = n.send(1, 50)
    _out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err[-3000:]
    _wait(lambda: len(n.received("r1")) >= 50, 60, "50 messages")
    _wait(lambda: all(v == 1 for v in counts().values()), 30, "50 effects")
    os.killpg(proc.pid, signal.SIGKILL)  # before any later save of its position
    proc.wait(timeout=10)
    # the second life replays from the saved position: the same messages again
    proc = n.receiver("r1", {**env, "MC_HIGH_WATER_EVERY": "0.5"})
    _wait(lambda: len(n.received("r1")) > 50, 60, "the replay")
    monitor = make_app(n.app, {})

    def skipped():
        return get_inbox(monitor).stats().get("sync:c:counter", {}).get("skipped", 0)

    try:
        # every replayed message reached both handlers: the plain one ran again,
        # the idempotent one was skipped
        _wait(
            lambda: skipped() == len(n.received("r1")) - 50,
            30,
            "each replayed message skipped",
        )
        # not stopped gracefully: a stop racing the outbox thread's replay can
        # deadlock (app lock vs receiver lock, outbox code); nothing here needs it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        received = n.received("r1")
        assert sorted(set(received)) == list(range(1, 51))
        assert len(received) - 50 == skipped() > 0
        assert counts() == {i: 1 for i in range(1, 51)}
        assert get_inbox(monitor).stats()["sync:c:counter"]["recorded"] == 50
    finally:
        monitor.stop()
    assert n.gaps("r1") == []
