"""wrap / wrap_with_condition and their async twins, on every store of the suite."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from mega_cluster.cache import Cache
from mega_cluster.registry import ClusterApp

MISS = object()


class Counter:
    """A function that counts its calls (thread-safe) and returns ``value``."""

    def __init__(self, value: Any = "computed", delay: float = 0.0) -> None:
        self.value, self.delay, self.calls = value, delay, 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.value


def run_threads(n: int, target: Callable[[], Any], timeout: float = 30) -> list[Any]:
    """Run ``target`` in ``n`` threads started together; their results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [MISS] * n

    def body(i: int) -> None:
        barrier.wait(timeout)
        try:
            results[i] = target()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return results


def test_wrap_computes_on_a_miss_and_serves_the_cache_after(cache: Cache):
    """fn runs once; later wraps return the cached value; get sees it too."""
    fn = Counter({"x": 1})
    assert [cache.wrap("k", fn) for _ in range(3)] == [{"x": 1}] * 3
    assert fn.calls == 1
    assert cache.get("k") == {"x": 1}


@pytest.mark.parametrize("value", [None, 0, "", False])
def test_wrap_caches_falsy_results(cache: Cache, value: Any):
    """A function returning None/0/""/False is not called again."""
    fn = Counter(value)
    assert cache.wrap("k", fn) == value
    assert cache.wrap("k", fn) == value
    assert fn.calls == 1


def test_wrap_uses_the_given_ttl(cache: Cache):
    """wrap(key, fn, ttl) stores the value for ttl seconds."""
    cache.wrap("k", Counter(), ttl=30)
    left = cache.ttl("k")
    assert left is not None and left <= 30


def test_a_raising_fn_caches_nothing_and_frees_the_lock(cache: Cache):
    """The exception reaches the caller, nothing is cached, the cluster lock is
    free again and the next wrap computes."""

    def boom() -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.wrap("k", boom)
    assert cache.get("k", MISS) is MISS
    if cache.store.shared:
        lock = cache.app.lock_manager.try_acquire(cache.lock_key("k"))
        assert lock is not None
        lock.release()
    assert cache.wrap("k", Counter(7)) == 7


def test_use_cache_false_neither_reads_nor_writes(cache: Cache):
    """wrap_with_condition(use_cache=False) runs fn and leaves the cache as it was."""
    cache.set("k", "old")
    fn = Counter("new")
    assert cache.wrap_with_condition("k", fn, use_cache=False) == "new"
    assert cache.get("k") == "old"
    assert cache.wrap_with_condition("fresh", fn, use_cache=False) == "new"
    assert cache.get("fresh", MISS) is MISS
    assert fn.calls == 2


def test_is_cacheable_decides_what_is_kept(cache: Cache):
    """A value is_cacheable rejects is returned but not cached; one it accepts is."""
    fn = Counter([])
    for _ in range(2):
        assert cache.wrap_with_condition("k", fn, is_cacheable=bool) == []
    assert fn.calls == 2 and cache.get("k", MISS) is MISS
    fn.value = [1]
    cache.wrap_with_condition("k", fn, is_cacheable=bool)
    cache.wrap_with_condition("k", fn, is_cacheable=bool)
    assert fn.calls == 3 and cache.get("k") == [1]


def test_concurrent_misses_in_one_process_compute_once(cache: Cache):
    """12 threads wrap the same cold key: fn runs once, all get its value."""
    fn = Counter("shared", delay=0.3)
    results = run_threads(12, lambda: cache.wrap("cold", fn))
    assert results == ["shared"] * 12
    assert fn.calls == 1


def test_a_waiter_computes_itself_after_wrap_timeout(
    make_cache: Callable[..., Cache], make_cluster_app: Callable[..., ClusterApp]
):
    """A caller waiting for a slow leader gives up after WRAP_TIMEOUT and computes."""
    cache = make_cache(app=make_cluster_app(WRAP_TIMEOUT=0.2))
    release = threading.Event()
    leader_calls: list[str] = []

    def slow() -> str:
        leader_calls.append("leader")
        release.wait(10)
        return "leader"

    leader = threading.Thread(target=lambda: cache.wrap("k", slow))
    leader.start()
    deadline = time.monotonic() + 5
    while not leader_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert leader_calls, "the leader never started"
    try:
        follower = Counter("follower")
        assert cache.wrap("k", follower) == "follower"
        assert follower.calls == 1
    finally:
        release.set()
        leader.join(10)


def test_wrap_waits_for_the_value_another_node_computes(
    make_cache: Callable[..., Cache], make_cluster_app: Callable[..., ClusterApp]
):
    """While another node holds the key's wrap lock, wrap waits; when that node
    stores the value and releases, wrap returns it without calling fn."""
    here = make_cache("w", app=make_cluster_app())
    if not here.store.shared:
        pytest.skip("a process-local store has no other nodes to wait for")
    there = make_cache("w", app=make_cluster_app())
    lock = there.app.lock_manager.acquire(there.lock_key("k"), wait=5)
    fn = Counter("mine")
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(here.wrap("k", fn)))
    waiter.start()
    try:
        time.sleep(0.3)
        assert waiter.is_alive() and not result, "wrap did not wait for the lock"
        there.set("k", "theirs")
    finally:
        lock.release()
    waiter.join(10)
    assert result == ["theirs"]
    assert fn.calls == 0


def test_wrap_computes_when_the_lock_stays_held_past_wrap_timeout(
    make_cache: Callable[..., Cache], make_cluster_app: Callable[..., ClusterApp]
):
    """A node that never delivers does not block wrap for longer than WRAP_TIMEOUT."""
    here = make_cache("w", app=make_cluster_app(WRAP_TIMEOUT=0.3))
    if not here.store.shared:
        pytest.skip("a process-local store has no other nodes to wait for")
    there = make_cache("w", app=make_cluster_app())
    lock = there.app.lock_manager.acquire(there.lock_key("k"), wait=5)
    try:
        fn = Counter("mine")
        assert here.wrap("k", fn) == "mine"
        assert fn.calls == 1
        assert there.get("k") == "mine"
    finally:
        lock.release()


def test_awrap_coalesces_coroutines_and_accepts_sync_functions(cache: Cache):
    """20 coroutines awaiting awrap on a cold key run the async fn once; a plain
    function works too; use_cache=False and is_cacheable behave as in wrap."""
    calls = []

    async def fetch() -> str:
        calls.append(1)
        await asyncio.sleep(0.2)
        return "async-value"

    async def scenario() -> None:
        results = await asyncio.gather(*(cache.awrap("k", fetch) for _ in range(20)))
        assert results == ["async-value"] * 20
        assert len(calls) == 1
        assert await cache.awrap("k", fetch) == "async-value"
        sync_fn = Counter(None)
        assert await cache.awrap("s", sync_fn) is None
        assert await cache.awrap("s", sync_fn) is None
        assert sync_fn.calls == 1
        assert await cache.awrap_with_condition("k", fetch, use_cache=False) == (
            "async-value"
        )
        assert len(calls) == 2
        assert await cache.awrap_with_condition("u", fetch, is_cacheable=lambda v: 0)
        assert await cache.aget("u", MISS) is MISS

    asyncio.run(scenario())
    assert cache.get("k") == "async-value"


def test_awrap_propagates_errors_and_caches_nothing(cache: Cache):
    """An async fn that raises reaches every coalesced awaiter; nothing is cached."""

    async def boom() -> Any:
        await asyncio.sleep(0.1)
        raise ValueError("nope")

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            *(cache.awrap("k", boom) for _ in range(5)), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert all(isinstance(r, ValueError) for r in results)
    assert cache.get("k", MISS) is MISS


def test_awrap_waits_for_the_value_another_node_computes(
    make_cache: Callable[..., Cache], make_cluster_app: Callable[..., ClusterApp]
):
    """awrap waits (async with the cluster lock) while another node computes, then
    returns that node's value without calling fn."""
    here = make_cache("w", app=make_cluster_app())
    if not here.store.shared:
        pytest.skip("a process-local store has no other nodes to wait for")
    there = make_cache("w", app=make_cluster_app())
    lock = there.app.lock_manager.acquire(there.lock_key("k"), wait=5)
    calls: list[int] = []

    async def mine() -> str:
        calls.append(1)
        return "mine"

    async def scenario() -> Any:
        task = asyncio.ensure_future(here.awrap("k", mine))
        await asyncio.sleep(0.3)
        assert not task.done(), "awrap did not wait for the lock"
        await asyncio.to_thread(there.set, "k", "theirs")
        await asyncio.to_thread(lock.release)
        return await asyncio.wait_for(task, 10)

    try:
        assert asyncio.run(scenario()) == "theirs"
    finally:
        lock.release()
    assert calls == []
