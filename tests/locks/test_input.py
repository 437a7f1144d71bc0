"""Bad lock keys, TTLs and waits fail at the call on every backend (the input
layer, docs/limits.md), and the manager keeps working afterwards."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mega_cluster.exceptions import ArgumentTypeError, InvalidArgument, InvalidLockKey

DOCUMENTED = (InvalidLockKey, InvalidArgument, ArgumentTypeError)
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

keys = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=40),
    st.text(min_size=500, max_size=600),
    st.sampled_from(["k\n", "é" * 256, "", "\ud800", "a\x00b"]),
    st.integers(),
    st.none(),
)
ttls = st.one_of(
    st.none(),
    st.floats(),
    st.integers(min_value=-5, max_value=10**10),
    st.sampled_from([10**400, True, "5", math.nan, math.inf, 1e300, 0.0005]),
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e300, 10**400, -1, 0])
def test_bad_ttls_raise_at_the_call_and_never_lock(manager, other, bad):
    """ttl=NaN used to give no exclusion on local; inf/1e300 raised OverflowError
    or a raw ResponseError on Redis. Now InvalidArgument, nothing held."""
    with pytest.raises(InvalidArgument, match="ttl"):
        manager.acquire("k", ttl=bad, wait=0)
    with pytest.raises(InvalidArgument, match="ttl"):
        manager.try_acquire("k", ttl=bad)
    assert manager.list_locks() == []
    lock = other.try_acquire("k", ttl=5)
    assert lock is not None
    assert manager.try_acquire("k") is None  # exclusion holds
    lock.release()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e300, -1])
def test_extend_with_a_bad_ttl_raises_and_keeps_the_lease(manager, other, bad):
    """extend(NaN) used to leave the local lock free for anyone."""
    lock = manager.acquire("k", ttl=5, wait=0)
    with pytest.raises(InvalidArgument, match="ttl"):
        lock.extend(bad)
    assert not lock.lost and lock.ttl == 5
    assert other.try_acquire("k") is None
    assert lock.extend(6)
    lock.release()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, 10**400, True])
def test_bad_waits_raise_at_the_call(manager, other, bad):
    """wait=NaN used to block forever on the local backend."""
    held = other.acquire("k", ttl=5, wait=0)
    with pytest.raises((InvalidArgument, ArgumentTypeError), match="wait"):
        manager.acquire("k", wait=bad)
    with pytest.raises((InvalidArgument, ArgumentTypeError), match="wait"):
        with manager.lock("k", wait=bad):
            pass  # pragma: no cover - never entered
    held.release()


@pytest.mark.timeout(60)
def test_a_key_with_a_lone_surrogate_or_nul_is_an_invalid_lock_key(manager):
    """Not a UnicodeEncodeError, nor a DataError from PostgreSQL."""
    with pytest.raises(InvalidLockKey, match="surrogate"):
        manager.acquire("k\ud800", wait=0)
    with pytest.raises(InvalidLockKey, match="NUL"):
        manager.acquire("a\x00b", wait=0)
    with pytest.raises(InvalidLockKey):
        manager.force_release("k\udfff")


@pytest.mark.timeout(60)
def test_async_twins_refuse_the_same(manager):
    async def scenario():
        with pytest.raises(InvalidArgument):
            await manager.aacquire("k", ttl=math.nan, wait=0)
        with pytest.raises(InvalidArgument):
            await manager.atry_acquire("k", ttl=math.inf)
        with pytest.raises(InvalidLockKey):
            await manager.arun_exclusive("", lambda: None)
        lock = await manager.aacquire("k", ttl=5, wait=0)
        with pytest.raises(InvalidArgument):
            await lock.aextend(math.nan)
        await lock.arelease()

    asyncio.run(scenario())


@pytest.mark.timeout(300)
@PROPERTY
@given(key=keys, ttl=ttls)
def test_any_key_and_ttl_lock_or_fail_at_the_call(manager, other, key, ttl):
    """Property: try_acquire either holds the key (seen by list_locks and by
    another node) or raises a documented error; either way the manager works on."""
    try:
        lock = manager.try_acquire(key, ttl=ttl)
    except DOCUMENTED:
        lock = None
    else:
        assert lock is not None and lock.key == key
        if ttl is None or ttl >= 2:  # shorter leases may end before the checks
            assert key in [info.key for info in manager.list_locks()]
            assert other.try_acquire(key) is None
        lock.release()
    probe = manager.try_acquire("probe", ttl=5)
    assert probe is not None
    probe.release()


@pytest.mark.timeout(300)
@PROPERTY
@given(key=keys, ttl=ttls)
def test_the_async_twins_accept_and_refuse_the_same(manager, key, ttl):
    """Property: atry_acquire accepts what try_acquire accepts (and holds the
    key) and refuses the rest with a documented error at the call."""

    async def attempt():
        return await manager.atry_acquire(key, ttl=ttl)

    try:
        manager._key(key)
        manager.check_ttl(ttl)
        valid = True
    except DOCUMENTED:
        valid = False
    try:
        lock = asyncio.run(attempt())
    except DOCUMENTED:
        assert not valid
    else:
        assert valid and lock is not None and lock.key == key
        asyncio.run(lock.arelease())
