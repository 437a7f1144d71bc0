"""Local-backend extras: the process-wide map of entries stays bounded."""

from __future__ import annotations

import time

import pytest

from mega_cluster.exceptions import LockTimeout
from mega_cluster.locks.backends import local
from mega_cluster.testing import make_app


@pytest.fixture
def manager(unique_name):
    app = make_app(unique_name, {"LOCKS": {"BACKEND": "local"}})
    yield app.lock_manager
    app.stop()


def entries_of(manager) -> list[str]:
    return [key for app, key in local._store.entries if app == manager.app.name]


def test_released_keys_leave_no_entry(manager):
    """After 5,000 distinct keys are acquired and released the map holds none of
    them: an entry is dropped as soon as its key is free."""
    for i in range(5000):
        manager.acquire(f"k{i}", ttl=5).release()
    assert entries_of(manager) == []


def test_timed_out_waiters_and_try_acquire_leave_no_entry(manager):
    """A refused try_acquire and a waiter that gives up leave only the holder's
    entry, and none once it is released."""
    held = manager.acquire("busy", ttl=5)
    assert manager.try_acquire("busy") is None
    with pytest.raises(LockTimeout):
        manager.acquire("busy", wait=0.05)
    assert entries_of(manager) == ["busy"]
    held.release()
    assert entries_of(manager) == []


def test_a_lapsed_lease_taken_over_leaves_no_entry(manager):
    """A lease that ran out without release() is taken over by a waiter, and the
    key's entry goes when that holder releases."""
    manager.acquire("lapsed", ttl=0.05)  # never released
    other = make_app(manager.app.name, {"LOCKS": {"BACKEND": "local"}}).lock_manager
    try:
        taken = other.acquire("lapsed", ttl=5, wait=2)  # takes over after the TTL
        taken.release()
    finally:
        other.app.stop()
    assert entries_of(manager) == []


def test_expired_leases_never_released_are_swept(manager):
    """Leases dropped without release() do not pile up: 5,000 of them never leave
    more entries than the sweep threshold in the map."""
    largest = 0
    for i in range(5000):
        manager.acquire(f"dropped{i}", ttl=0.001)
        largest = max(largest, len(local._store.entries))
        if i % 1000 == 999:
            time.sleep(0.01)  # let the last ones expire
    assert largest <= 2 * 1024, largest
    assert len(entries_of(manager)) <= 1024
