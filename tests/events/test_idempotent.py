"""Idempotent event handlers (the inbox), on every event backend: the effect of an
event runs once although the event runs again (docs/events.md#exactly-once-effects)."""

from __future__ import annotations

import time

import pytest
from django.db import connections

from mega_cluster import idempotent
from mega_cluster.inbox import get_inbox
from mega_cluster.testing import make_app

from .conftest import queue_settings, wait_until


class Ledger:
    """A table of ``k -> n`` on ``alias``; ``add(k)`` is an effect a second run
    repeats."""

    def __init__(self, alias: str, name: str) -> None:
        self.alias = alias
        self.table = f"ledger_{name}".lower().replace("-", "_")
        with connections[alias].cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE {self.table} (k varchar(50) PRIMARY KEY, n int)"
            )

    def add(self, key: str, alias: str | None = None) -> None:
        with connections[alias or self.alias].cursor() as cursor:
            cursor.execute(f"UPDATE {self.table} SET n = n + 1 WHERE k = %s", [key])
            if cursor.rowcount == 0:
                cursor.execute(f"INSERT INTO {self.table} VALUES (%s, 1)", [key])

    def counts(self) -> dict[str, int]:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(f"SELECT k, n FROM {self.table}")
            return dict(cursor.fetchall())

    def drop(self) -> None:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")


@pytest.fixture
def setup(apps):
    """An app on the backend under test whose inbox, and the ledger, are on the
    event queue's database."""
    alias = apps.transaction_alias
    ledger = Ledger(alias, apps.name)

    def make(**overrides):
        settings = queue_settings(apps.backend, apps.database, **overrides)
        app = make_app(apps.name, {**settings, "INBOX": {"DATABASE": alias}})
        apps.apps.append(app)
        return app

    try:
        yield make, ledger
    finally:
        ledger.drop()


def _stats(app, channel="ledger"):
    return app.event_queue.stats(channel)[channel]


@pytest.mark.parametrize("marked", [True, False], ids=["idempotent", "plain"])
def test_an_attempt_that_committed_then_failed_is_not_repeated(setup, marked):
    """The first attempt commits its effect but outlives its timeout, so it counts
    as failed and the event runs again: an idempotent handler's retry finds the
    effect committed and is skipped (counted); a plain one adds a second time."""
    make, ledger = setup
    app = make()

    def process(payload, ctx):
        ledger.add(payload)
        if ctx.attempt == 1:
            time.sleep(0.6)  # past the timeout, then the transaction commits

    app.event_queue.subscribe(
        "ledger", process=process, timeout=0.2, max_retries=3, idempotent=marked
    )
    app.start()
    app.event_queue.publish("ledger", "a")
    wait_until(lambda: _stats(app)["succeeded"] == 1, what="the retry to succeed")
    assert _stats(app)["failed"] == 1
    inbox = get_inbox(app)
    if marked:
        assert ledger.counts() == {"a": 1}
        assert inbox.stats() == {"event:ledger": {"recorded": 1, "skipped": 1}}
        assert inbox.skipped == {"event:ledger": 1}
    else:
        assert ledger.counts() == {"a": 2}
        assert inbox.stats() == {}


def test_a_failed_attempt_rolls_back_its_effect_and_its_record(setup):
    """A handler that raises after its write: the write and the inbox row roll
    back together, so the retry runs the handler again and the effect happens
    once."""
    make, ledger = setup
    app = make()

    @idempotent
    def process(payload, ctx):
        ledger.add(payload)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails after its write")

    app.event_queue.subscribe("ledger", process=process, max_retries=5)
    app.start()
    app.event_queue.publish("ledger", "b")
    wait_until(lambda: _stats(app)["succeeded"] == 1, what="the third attempt")
    assert _stats(app)["failed"] == 2
    assert ledger.counts() == {"b": 1}
    assert get_inbox(app).stats() == {"event:ledger": {"recorded": 1, "skipped": 0}}


def test_many_events_each_once(setup):
    """Events of an idempotent channel run concurrently, each recorded once."""
    make, ledger = setup
    app = make()
    app.event_queue.subscribe(
        "ledger", process=lambda p, ctx: ledger.add(p), concurrency=4, idempotent=True
    )
    app.start()
    for i in range(20):
        app.event_queue.publish("ledger", f"k{i}")
    wait_until(lambda: _stats(app)["succeeded"] == 20, what="20 events")
    assert ledger.counts() == {f"k{i}": 1 for i in range(20)}
    assert get_inbox(app).stats()["event:ledger"]["recorded"] == 20
