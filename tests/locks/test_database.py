"""Database-backend extras: an unreachable database, rows left by dead nodes."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.testing import make_app
from tests.databases import DATABASES
from tests.factories import LockLeaseFactory, LockWaiterFactory
from tests.servers import free_port


@pytest.fixture(params=DATABASES)
def alias(request) -> str:
    return request.param


@pytest.fixture
def manager(alias, unique_name):
    app = make_app(
        unique_name,
        {"LOCKS": {"BACKEND": "database", "OPTIONS": {"DATABASE": alias}}},
    )
    yield app.lock_manager
    app.stop()


@pytest.fixture(params=["default", "postgres"], ids=["sqlite", "postgres"])
def down_alias(request, tmp_path, django_db_blocker):
    """A DATABASES alias like ``default`` or ``postgres`` whose server cannot be
    reached: SQLite in a directory that does not exist, PostgreSQL on a closed
    port. No test database is involved, so no ``django_db`` mark: the alias is
    opened to the backend with ``django_db_blocker.unblock()``."""
    config = dict(connections.settings[request.param])
    if request.param == "postgres":
        config.update(PORT=str(free_port()), OPTIONS={"connect_timeout": 2})
    else:
        config["NAME"] = str(Path(tmp_path) / "missing" / "db.sqlite3")
    # connections.settings is settings.DATABASES, defaults filled in.
    settings.DATABASES["down"] = config
    try:
        with django_db_blocker.unblock():
            yield "down"
    finally:
        connections.settings.pop("down", None)
        settings.DATABASES.pop("down", None)


def test_database_down_raises_backend_unavailable_never_a_grant(
    down_alias, unique_name
):
    """With the database unreachable every call raises BackendUnavailable with the
    driver error as __cause__; nothing is granted."""
    app = make_app(
        unique_name,
        {"LOCKS": {"BACKEND": "database", "OPTIONS": {"DATABASE": down_alias}}},
    )
    manager = app.lock_manager
    try:
        for call in (
            lambda: manager.try_acquire("down"),
            lambda: manager.acquire("down", wait=0.5),
            lambda: manager.run_exclusive("down", lambda: pytest.fail("ran"), wait=0.5),
            lambda: manager.force_release("down"),
            manager.list_locks,
        ):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                call()
            assert time.monotonic() - started < 10
            assert isinstance(info.value, ConnectionError)
            assert isinstance(info.value.__cause__, DatabaseError)
            assert "down" in str(info.value)
        assert manager.stats()["held"] == 0
        assert manager.stats()["acquired"] == 0
    finally:
        app.stop()


def test_an_expired_lease_of_a_dead_holder_is_taken_with_the_next_fence(manager, alias):
    """A row left by a holder that died mid-lease is taken over once it expires,
    with a fence above the dead holder's."""
    LockLeaseFactory(
        using=alias,
        app_name=manager.app.name,
        key="orphan",
        holder="dead-node",
        fence=41,
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    lock = manager.try_acquire("orphan", ttl=5)
    assert lock is not None and lock.fence == 42
    lock.release()


def test_a_live_lease_of_another_node_is_respected(manager, alias):
    """A row held by another node until later excludes us until then."""
    LockLeaseFactory(
        using=alias,
        app_name=manager.app.name,
        key="theirs",
        fence=7,
        expires_at=timezone.now() + timedelta(seconds=1),
    )
    assert manager.try_acquire("theirs") is None
    lock = manager.acquire("theirs", ttl=5, wait=5)
    assert lock.fence == 8
    lock.release()


def test_a_dead_waiters_place_holds_the_queue_only_until_its_deadline(manager, alias):
    """A queue place left by a waiter that died goes first while its deadline is
    live (FIFO), and stops blocking the key once it passes; a place already past
    its deadline never blocks."""
    LockLeaseFactory(using=alias, app_name=manager.app.name, key="queued", token="")
    stale = LockWaiterFactory(
        using=alias,
        app_name=manager.app.name,
        key="queued",
        deadline=timezone.now() - timedelta(seconds=1),
    )
    lock = manager.try_acquire("queued", ttl=5)
    assert lock is not None
    lock.release()

    LockWaiterFactory(
        using=alias,
        app_name=manager.app.name,
        key="queued",
        deadline=timezone.now() + timedelta(seconds=0.8),
    )
    assert manager.try_acquire("queued") is None
    started = time.monotonic()
    lock = manager.acquire("queued", ttl=5, wait=5)
    assert time.monotonic() - started >= 0.3
    lock.release()
    assert not type(stale).objects.using(alias).filter(pk=stale.pk).exists()
