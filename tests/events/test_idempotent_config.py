"""The inbox's settings, misuse and pruning: checks naming the setting, errors at
the call, writes on another database refused, rows older than RETENTION pruned."""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from mega_cluster import ConfigurationError, idempotent
from mega_cluster.checks import check_settings
from mega_cluster.inbox import get_inbox
from mega_cluster.testing import make_app

from .conftest import FAST, wait_until
from .test_idempotent import Ledger

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])


def _check(value):
    """The errors the checks report for ``value`` (warnings, e.g. W001, aside)."""
    with override_settings(MEGA_CLUSTER=value):
        return [(m.id, m.msg, m.hint) for m in check_settings() if m.is_serious()]


def test_inbox_database_must_be_an_alias(unique_name):
    """A DATABASE that is no DATABASES alias: check E017 and, at the first
    idempotent subscribe, ConfigurationError; both name the setting."""
    [(check_id, msg, hint)] = _check({"INBOX": {"DATABASE": "nope"}})
    assert check_id == "mega_cluster.E017"
    assert "INBOX DATABASE 'nope'" in msg
    assert 'MEGA_CLUSTER["INBOX"]["DATABASE"]' in hint
    app = make_app(unique_name, {"INBOX": {"DATABASE": "nope"}})
    try:
        with pytest.raises(ConfigurationError, match=r'\["INBOX"\]\["DATABASE"\]'):
            app.event_queue.subscribe("c", process=print, idempotent=True)
        app.event_queue.subscribe("plain", process=print)  # needs no inbox
    finally:
        app.stop()
    with override_settings(MEGA_CLUSTER={"INBOX": {"DATABASE": "nope"}}):
        with pytest.raises(SystemCheckError, match="E017"):
            call_command("check")


@pytest.mark.parametrize("value", [0, -1, "60", float("nan"), True, 2e9])
def test_inbox_retention_is_validated(value):
    """RETENTION: seconds > 0 (at most 10⁹) or None; anything else is E005."""
    [(check_id, msg, _)] = _check({"INBOX": {"RETENTION": value}})
    assert check_id == "mega_cluster.E005"
    assert "INBOX RETENTION" in msg
    assert _check({"INBOX": {"RETENTION": None, "DATABASE": "postgres"}}) == []


def test_unknown_inbox_key_is_refused():
    [(check_id, msg, _)] = _check({"INBOX": {"DATABSE": "default"}})
    assert check_id == "mega_cluster.E006"
    assert "DATABSE" in msg


def test_bad_arguments_fail_at_the_call(unique_name):
    """An async handler cannot be idempotent (its transaction needs one thread);
    the flag must be a bool (a str names the consumer of a sync-message handler)."""

    async def handler(payload, ctx):
        pass

    with pytest.raises(TypeError, match="needs a sync handler"):
        idempotent(handler)
    with pytest.raises(TypeError, match="decorates a function"):
        idempotent("not callable")
    app = make_app(unique_name, {"EVENT_QUEUE": {"BACKEND": "memory"}})
    try:
        queue = app.event_queue
        with pytest.raises(TypeError, match="needs a sync handler"):
            queue.subscribe("c", process=handler, idempotent=True)
        with pytest.raises(TypeError, match="idempotent must be True or False"):
            queue.subscribe("c", process=print, idempotent="yes")
        assert queue.subscriptions() == {}
        sync = app.sync_message_manager
        with pytest.raises(TypeError, match="needs a sync handler"):
            sync.subscribe("c", handler, idempotent=True)
        with pytest.raises(TypeError, match="True, False or a consumer name"):
            sync.subscribe("c", print, idempotent=1)
        with pytest.raises(ValueError, match="consumer name"):
            sync.subscribe("c", print, idempotent="bad name!")
    finally:
        app.stop()


@pytest.mark.postgres
def test_a_write_on_another_database_is_refused(unique_name):
    """The inbox is on ``default``; a handler that writes to ``postgres`` would
    not be rolled back with the inbox row: the write is refused before it runs,
    the attempt fails, and the dead letter's error names both databases and the
    setting."""
    ledger = Ledger("postgres", unique_name)
    app = make_app(unique_name, {"EVENT_QUEUE": {"BACKEND": "database", **FAST}})
    try:
        app.event_queue.subscribe(
            "c", process=lambda p, ctx: ledger.add(p), idempotent=True
        )
        app.start()
        app.event_queue.publish("c", "x")
        wait_until(lambda: app.event_queue.dead_letters("c"), what="the dead letter")
        [letter] = app.event_queue.dead_letters("c")
        assert "ForeignWrite" in letter.error
        assert "wrote to database 'postgres'" in letter.error
        assert "inbox is on 'default'" in letter.error
        assert 'MEGA_CLUSTER["INBOX"]["DATABASE"]' in letter.error
        assert ledger.counts() == {}
        assert get_inbox(app).stats() == {}  # rolled back with the attempt
    finally:
        app.stop()
        ledger.drop()


def test_rows_older_than_retention_are_pruned(unique_name):
    """Handling a message prunes, at most every RETENTION / 2, the rows older than
    RETENTION: a redelivery older than that runs the handler again."""
    app = make_app(unique_name, {"INBOX": {"RETENTION": 0.5}})
    inbox = get_inbox(app)
    calls = []
    try:
        assert inbox.run("sync:c:h", "m1", calls.append, 1) is True
        assert inbox.run("sync:c:h", "m1", calls.append, 2) is False  # duplicate
        assert inbox.recorded("sync:c:h", "m1")
        time.sleep(0.6)
        assert inbox.run("sync:c:h", "m2", calls.append, 3) is True  # prunes m1
        assert not inbox.recorded("sync:c:h", "m1")
        assert inbox.recorded("sync:c:h", "m2")
        assert inbox.run("sync:c:h", "m1", calls.append, 4) is True  # too old
        assert calls == [1, 3, 4]
        assert inbox.stats() == {"sync:c:h": {"recorded": 2, "skipped": 1}}
        time.sleep(0.6)
        assert inbox.prune() == 2
    finally:
        app.stop()


def test_inbox_is_per_app_and_consumer(unique_name):
    """The same message id is new for another consumer and for another app."""
    one = make_app(unique_name, {})
    two = make_app(f"{unique_name}b"[:50], {})
    calls = []
    try:
        assert get_inbox(one).run("a", "m", calls.append, 1)
        assert get_inbox(one).run("b", "m", calls.append, 2)
        assert get_inbox(two).run("a", "m", calls.append, 3)
        assert not get_inbox(one).run("a", "m", calls.append, 4)
        assert calls == [1, 2, 3]
        long_id = "x" * 500
        assert get_inbox(one).run("a", long_id, calls.append, 5)
        assert not get_inbox(one).run("a", long_id, calls.append, 6)
    finally:
        one.stop()
        two.stop()


def test_a_database_without_the_inbox_table_is_named(procs, tmp_path):
    """The first idempotent delivery on a database that lacks the inbox table
    raises ConfigurationError naming the setting and the migrate command, not the
    driver's "no such table"; the handler does not run. (In a child process: the
    test's own database guard refuses aliases added at run time.)"""
    child = procs.spawn(
        ["tests/events/inbox_unmigrated_child.py"],
        {"MC_UNMIGRATED": str(tmp_path / "unmigrated.sqlite3")},
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err[-3000:]
    assert 'MEGA_CLUSTER["INBOX"]["DATABASE"]' in out
    assert "migrate --database unmigrated" in out
    assert "calls []" in out
