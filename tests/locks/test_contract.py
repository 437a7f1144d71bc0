"""The LockManager contract, run on every backend (local, redis, database x2)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from mega_cluster.exceptions import InvalidLockKey, LockLost, LockTimeout
from mega_cluster.locks import Lock, LockInfo


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def waiters_of(manager, key: str) -> int:
    for info in manager.list_locks():
        if info.key == key:
            return info.waiters
    return 0


def test_acquire_returns_a_handle_and_release_frees_the_key(manager, other):
    """A held key excludes other nodes; release() frees it at once."""
    lock = manager.acquire("job", ttl=5)
    assert isinstance(lock, Lock)
    assert lock.key == "job" and isinstance(lock.token, str) and lock.token
    assert isinstance(lock.fence, int) and not lock.lost
    assert other.try_acquire("job") is None
    lock.release()
    again = other.try_acquire("job")
    assert again is not None
    again.release()


def test_try_acquire_returns_none_while_held(manager, other):
    """try_acquire never waits and returns None while another node holds the key."""
    held = manager.acquire("busy", ttl=5)
    started = time.monotonic()
    assert other.try_acquire("busy") is None
    assert manager.try_acquire("busy") is None  # not reentrant
    assert time.monotonic() - started < 2
    held.release()


def test_acquire_raises_lock_timeout_after_wait(manager, other):
    """acquire() waits up to `wait`, then raises LockTimeout (a TimeoutError)."""
    held = manager.acquire("slow", ttl=5)
    started = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        other.acquire("slow", wait=0.3)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started >= 0.29
    assert "slow" in str(info.value)
    held.release()


def test_release_is_idempotent(manager):
    """A second release() is a no-op and does not mark the lock lost."""
    lock = manager.acquire("twice", ttl=5)
    lock.release()
    lock.release()
    assert lock.released and not lock.lost


def test_stale_release_after_expiry_never_frees_the_next_holder(manager, other):
    """Releasing an expired lease leaves the new holder's lease intact."""
    first = manager.acquire("stale", ttl=0.2)
    second = other.acquire("stale", ttl=5, wait=3)
    assert second.fence > first.fence
    first.release()
    assert first.lost
    assert manager.try_acquire("stale") is None
    assert [i.fence for i in manager.list_locks() if i.key == "stale"] == [second.fence]
    second.release()
    assert not second.lost


def test_extend_after_expiry_returns_false(manager):
    """extend() on an ended lease returns False and marks the lock lost."""
    lock = manager.acquire("short", ttl=0.15)
    time.sleep(0.3)
    assert lock.extend() is False
    assert lock.lost


def test_extend_while_held_prolongs_the_lease(manager, other):
    """extend(ttl) moves the end of the lease; the key stays held past the old TTL."""
    lock = manager.acquire("longer", ttl=0.4)
    assert lock.extend(3) is True
    time.sleep(0.6)
    assert other.try_acquire("longer") is None
    lock.release()
    assert not lock.lost


def test_fence_strictly_increases_across_holders(manager, other):
    """Each new holder of a key gets a larger fence, also after an expiry."""
    fences = []
    for i in range(4):
        lock = (manager if i % 2 else other).acquire("fenced", ttl=5)
        fences.append(lock.fence)
        lock.release()
    expired = manager.acquire("fenced", ttl=0.1)
    fences.append(expired.fence)
    taken = other.acquire("fenced", ttl=5, wait=3)
    fences.append(taken.fence)
    taken.release()
    assert fences == sorted(set(fences)), fences


def test_waiters_are_served_first_come_first_served(manager, make_manager):
    """Five waiters queued one after the other get the lock in that order."""
    holder = manager.acquire("fifo", ttl=10)
    order: list[int] = []
    errors: list[BaseException] = []
    nodes = [make_manager() for _ in range(5)]

    def wait_for_lock(i: int) -> None:
        try:
            lock = nodes[i].acquire("fifo", ttl=10, wait=15)
            order.append(i)
            time.sleep(0.02)
            lock.release()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = []
    for i in range(5):
        thread = threading.Thread(target=wait_for_lock, args=(i,))
        thread.start()
        threads.append(thread)
        assert wait_until(lambda n=i + 1: waiters_of(manager, "fifo") == n), (
            f"waiter {i} did not queue"
        )
    holder.release()
    for thread in threads:
        thread.join(timeout=20)
    assert not errors, errors
    assert order == [0, 1, 2, 3, 4]


def test_a_waiter_that_gives_up_does_not_stall_the_queue(manager, make_manager):
    """After the first waiter times out, a release goes straight to the next one."""
    holder = manager.acquire("giveup", ttl=10)
    quitter, patient = make_manager(), make_manager()
    outcome: dict[str, object] = {}

    def quit_early() -> None:
        try:
            quitter.acquire("giveup", wait=0.3)
        except LockTimeout as exc:
            outcome["quitter"] = exc

    def wait_long() -> None:
        lock = patient.acquire("giveup", ttl=5, wait=10)
        outcome["patient_at"] = time.monotonic()
        lock.release()

    first = threading.Thread(target=quit_early)
    first.start()
    assert wait_until(lambda: waiters_of(manager, "giveup") == 1)
    second = threading.Thread(target=wait_long)
    second.start()
    assert wait_until(lambda: waiters_of(manager, "giveup") == 2)
    first.join(timeout=5)
    assert isinstance(outcome.get("quitter"), LockTimeout)
    released_at = time.monotonic()
    holder.release()
    second.join(timeout=10)
    # Served by the release itself, not by a waiter lease lapsing (3 s).
    assert outcome["patient_at"] - released_at < 2.0


def test_run_exclusive_returns_the_result_and_releases(manager, other):
    """run_exclusive runs fn under the lock and frees the key afterwards."""
    seen = []

    def section() -> str:
        seen.append(other.try_acquire("section"))
        return "done"

    assert manager.run_exclusive("section", section, ttl=5) == "done"
    assert seen == [None]
    lock = other.try_acquire("section")
    assert lock is not None
    lock.release()


def test_run_exclusive_raises_lock_timeout_and_never_runs_fn(manager, other):
    """When the key stays held, fn is not run and LockTimeout says so."""
    held = manager.acquire("never", ttl=5)
    calls = []
    with pytest.raises(LockTimeout):
        other.run_exclusive("never", lambda: calls.append(1), wait=0.2)
    assert calls == []
    held.release()


def test_run_exclusive_releases_when_fn_raises(manager, other):
    """An exception from fn propagates and the key is free afterwards."""

    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        manager.run_exclusive("boom", boom, ttl=5)
    lock = other.try_acquire("boom")
    assert lock is not None
    lock.release()


def test_watchdog_keeps_a_long_section_protected(manager, other):
    """A section running 3x its TTL stays exclusive: the watchdog renews it."""
    probes = []

    def long_section() -> None:
        for _ in range(3):
            time.sleep(0.3)
            probes.append(other.try_acquire("renewed"))

    manager.run_exclusive("renewed", long_section, ttl=0.3)
    assert probes == [None, None, None]
    assert manager.stats()["extended"] >= 2


def test_run_exclusive_raises_lock_lost_after_fn_when_the_lease_is_lost(manager, other):
    """A lease taken away mid-section is reported as LockLost after fn returns."""
    finished = []

    def section() -> None:
        assert other.force_release("stolen") is True
        time.sleep(0.4)  # the watchdog's next renewal (ttl/3) finds it gone
        finished.append(True)

    with pytest.raises(LockLost) as caught:
        manager.run_exclusive("stolen", section, ttl=0.3)
    assert finished == [True]
    assert manager.stats()["lost"] == 1
    # the lease was taken away, not run out: the message must not blame the TTL
    message = str(caught.value)
    assert "released or taken over, e.g. by a force release" in message, message
    assert "ttl of" not in message and "raise the ttl" not in message, message


def test_lock_lost_after_the_ttl_ran_out_blames_the_ttl(manager, other):
    """A lease that ran out (held past its TTL without renewal, then taken by
    another holder) says so."""
    lock = manager.acquire("ran-out", ttl=0.2)
    time.sleep(0.3)
    taker = other.acquire("ran-out", ttl=5, wait=5)
    lock.release()
    taker.release()
    assert lock.lost
    assert "its ttl of 0.2s ran out" in (lock.lost_reason or ""), lock.lost_reason
    assert "force release" not in (lock.lost_reason or "")


def test_a_failed_watchdog_renewal_logs_the_key_and_marks_the_lock_lost(
    manager, other, caplog
):
    """When the watchdog cannot extend a lease, a warning names the key and the
    lock is lost."""
    caplog.set_level(logging.WARNING, logger="mega_cluster.locks")
    lock = manager.acquire("renew-fails", ttl=0.3, auto_extend=True)
    assert other.force_release("renew-fails") is True
    assert wait_until(lambda: lock.lost, timeout=3)
    lost = [
        r.getMessage()
        for r in caplog.records
        if r.name == "mega_cluster.locks"
        and r.levelno == logging.WARNING
        and " lost " in r.getMessage()
    ]
    assert len(lost) == 1, caplog.text
    assert "'renew-fails'" in lost[0] and "renewal" in lost[0]
    lock.release()  # the lease is gone already: a no-op
    assert manager.stats()["lost"] == 1


def test_lock_context_manager_holds_and_releases(manager, other):
    """`with lock(key)` yields the Lock and frees the key at the end of the block."""
    with manager.lock("ctx", ttl=5) as lock:
        assert isinstance(lock, Lock)
        assert other.try_acquire("ctx") is None
    assert lock.released
    again = other.try_acquire("ctx")
    assert again is not None
    again.release()


def test_force_release_frees_a_key_and_the_holder_learns_it(manager, other):
    """force_release frees the key; the holder's extend() then returns False."""
    lock = manager.acquire("forced", ttl=5)
    assert other.force_release("forced") is True
    assert other.force_release("forced") is False
    taken = other.try_acquire("forced")
    assert taken is not None
    assert lock.extend() is False and lock.lost
    taken.release()


def test_force_release_with_a_fence_frees_only_that_lease(manager, other):
    """force_release(key, fence=...) frees the key only while the lease with that
    fence holds it: once the key changed hands (a new fence) or is free, nothing
    changes and it returns False."""
    first = manager.acquire("fenced", ttl=5)
    seen = first.fence
    first.release()
    second = manager.acquire("fenced", ttl=5)
    assert second.fence > seen
    assert other.force_release("fenced", fence=seen) is False
    assert second.extend() is True and not second.lost  # still held
    assert other.force_release("fenced", fence=second.fence) is True
    assert second.extend() is False and second.lost
    assert other.force_release("fenced", fence=second.fence) is False  # free now
    with pytest.raises(TypeError, match="fence must be an int"):
        other.force_release("fenced", fence="1")


def test_list_locks_describes_held_locks(manager, other):
    """list_locks gives key, holder node id, fence, times and waiter count."""
    lock = manager.acquire("listed", ttl=5)
    infos = [i for i in other.list_locks() if i.key == "listed"]
    assert len(infos) == 1
    info = infos[0]
    assert isinstance(info, LockInfo)
    assert info.holder == manager.app.node_id
    assert info.fence == lock.fence
    assert info.acquired_at.tzinfo is not None
    assert 4 <= (info.expires_at - info.acquired_at).total_seconds() <= 6
    assert info.waiters == 0
    assert info.as_dict()["key"] == "listed"
    lock.release()
    assert [i for i in other.list_locks() if i.key == "listed"] == []


def test_stats_count_this_process_operations(manager, other):
    """stats() counts acquisitions, releases, timeouts and what is held now."""
    lock = manager.acquire("counted", ttl=5)
    assert manager.stats()["held"] == 1
    with pytest.raises(LockTimeout):
        manager.acquire("counted", wait=0.05)
    lock.release()
    stats = manager.stats()
    assert stats["held"] == 0
    assert stats["acquired"] == 1 and stats["released"] == 1
    assert stats["timeouts"] == 1
    assert stats["backend"] in {"local", "redis", "database"}


@pytest.mark.parametrize(
    "key", ["", 42, None, b"bytes", "x" * 513, "é" * 257], ids=repr
)
def test_bad_keys_raise_invalid_lock_key(manager, key):
    """Empty, non-string and over-512-byte keys raise InvalidLockKey (a ValueError)."""
    with pytest.raises(InvalidLockKey) as info:
        manager.try_acquire(key)
    assert isinstance(info.value, ValueError)


def test_a_512_byte_key_with_any_characters_works(manager):
    """Keys are free text up to 512 UTF-8 bytes."""
    prefix = "ü/ key with spaces {}*?"
    key = prefix + "k" * (512 - len(prefix.encode()))
    assert len(key.encode()) == 512
    lock = manager.acquire(key, ttl=5)
    assert [i.key for i in manager.list_locks()] == [key]
    lock.release()


def test_bad_ttl_and_wait_raise_value_error(manager):
    """ttl must be > 0 and wait >= 0, with a message saying so."""
    with pytest.raises(ValueError, match="ttl"):
        manager.acquire("k", ttl=0)
    with pytest.raises(ValueError, match="wait"):
        manager.acquire("k", wait=-1)


def test_the_same_key_in_two_apps_does_not_exclude(make_manager, unique_name):
    """The app name is on the wire: app A's key never blocks app B's."""
    first = make_manager(unique_name).acquire("shared", ttl=5)
    second = make_manager(unique_name + "b").try_acquire("shared", ttl=5)
    assert second is not None
    first.release()
    second.release()


# async twins ---------------------------------------------------------------------------


def test_async_acquire_and_try_acquire(manager, other):
    """aacquire/atry_acquire/arelease behave like their sync twins."""

    async def scenario() -> None:
        lock = await manager.aacquire("async", ttl=5)
        assert await other.atry_acquire("async") is None
        with pytest.raises(LockTimeout):
            await other.aacquire("async", wait=0.1)
        assert await lock.aextend(5) is True
        await lock.arelease()
        again = await other.atry_acquire("async")
        assert again is not None
        await again.arelease()

    asyncio.run(scenario())


def test_async_run_exclusive_awaits_an_async_function(manager, other):
    """arun_exclusive awaits an `async def` and holds the key meanwhile."""

    async def section() -> str:
        await asyncio.sleep(0.05)
        assert await other.atry_acquire("async-section") is None
        return "ok"

    assert asyncio.run(manager.arun_exclusive("async-section", section, ttl=5)) == "ok"
    lock = other.try_acquire("async-section")
    assert lock is not None
    lock.release()


def test_arun_exclusive_raises_lock_lost_after_fn_when_the_lease_is_lost(
    manager, other
):
    """A lease taken away mid-section is reported as LockLost after the awaited
    function returns (async twin)."""
    finished = []

    async def section() -> None:
        assert await other.aforce_release("astolen") is True
        await asyncio.sleep(0.4)  # the watchdog's next renewal (ttl/3) finds it gone
        finished.append(True)

    with pytest.raises(LockLost):
        asyncio.run(manager.arun_exclusive("astolen", section, ttl=0.3))
    assert finished == [True]
    assert manager.stats()["lost"] == 1


def test_async_section_stays_protected_while_its_event_loop_is_blocked(manager, other):
    """Async holders are renewed off their event loop: an `async def` section that
    blocks the loop for 3x its TTL (CPU-bound work, a sync driver call) keeps the
    key, where a renewal task on that loop could not have run."""
    probes = []

    async def section() -> str:
        for _ in range(3):
            time.sleep(0.3)  # noqa: ASYNC251 - blocks the loop on purpose
            probes.append(other.try_acquire("async-blocked"))
        return "done"

    result = asyncio.run(manager.arun_exclusive("async-blocked", section, ttl=0.3))
    assert result == "done"
    assert probes == [None, None, None]
    assert manager.stats()["extended"] >= 2


def test_async_with_lock(manager, other):
    """`async with lock(key)` yields the Lock and frees the key afterwards."""

    async def scenario() -> Lock:
        async with manager.lock("async-ctx", ttl=5) as lock:
            assert await other.atry_acquire("async-ctx") is None
        return lock

    lock = asyncio.run(scenario())
    assert lock.released and not lock.lost


def test_async_force_release_and_list(manager, other):
    """aforce_release, alist_locks and astats mirror the sync calls."""

    async def scenario() -> None:
        lock = await manager.aacquire("async-list", ttl=5)
        assert [i.key for i in await other.alist_locks()] == ["async-list"]
        assert await other.aforce_release("async-list") is True
        assert (await manager.astats())["acquired"] == 1
        assert lock.extend() is False

    asyncio.run(scenario())


def test_release_stops_renewal_even_when_it_fails(manager, other):
    """A release that raises leaves the lease to end at its TTL (no more renewals)."""
    lock = manager.acquire("unrenewed", ttl=0.3, auto_extend=True)
    backend = manager.backend
    real_release = backend.release

    def failing_release(key: str, token: str) -> bool:
        from mega_cluster.exceptions import BackendUnavailable

        raise BackendUnavailable("simulated outage during release")

    backend.release = failing_release
    try:
        with pytest.raises(Exception, match="simulated outage"):
            lock.release()
    finally:
        backend.release = real_release
    assert wait_until(lambda: other.try_acquire("unrenewed") is not None, timeout=3)
