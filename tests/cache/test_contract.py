"""The cache contract (SPEC section 6, Cache), run on every store of the suite."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches

from mega_cluster.cache import FOREVER, Cache
from mega_cluster.cache.redis_cluster import RedisClusterCacheClient as ClusterClient
from mega_cluster.exceptions import InvalidName
from mega_cluster.registry import ClusterApp

MISS = object()
FALSY = [None, 0, 0.0, "", False, [], {}, ()]


def in_store(cache: Cache, wire: str, redis_client: Any) -> bool:
    """Whether the store holds ``wire``; on Redis, asked of the server itself."""
    if cache.store.shared:
        return bool(redis_client.exists(cache.store.backend.make_key(wire)))
    return cache.store.backend.has_key(wire)


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_set_then_get_returns_the_value_and_a_miss_returns_default(cache: Cache):
    """A stored value comes back; an absent key gives ``default`` (None if omitted)."""
    cache.set("k", {"a": [1, 2]})
    assert cache.get("k") == {"a": [1, 2]}
    assert cache.get("absent") is None
    assert cache.get("absent", MISS) is MISS


def test_falsy_values_are_cached_and_told_apart_from_a_miss(cache: Cache):
    """None, 0, "", False and empty containers are cached values, not misses."""
    for i, value in enumerate(FALSY):
        cache.set(f"f{i}", value)
    for i, value in enumerate(FALSY):
        got = cache.get(f"f{i}", MISS)
        assert got == value and type(got) is type(value)
    assert cache.mget([f"f{i}" for i in range(len(FALSY))]) == FALSY


def test_delete_removes_only_that_key(cache: Cache):
    """delete(key) removes the key; others stay; deleting an absent key is fine."""
    cache.mset({"a": 1, "b": 2})
    cache.delete("a")
    cache.delete("never-set")
    assert cache.get("a", MISS) is MISS
    assert cache.get("b") == 2


def test_entries_expire_after_their_ttl(
    make_cache: Callable[..., Cache], make_cluster_app: Callable[..., ClusterApp]
):
    """A call's ttl, the cache's ttl and the app's CACHE TTL each make entries expire."""
    by_call = make_cache("by-call")
    by_cache = make_cache("by-cache", ttl=1)
    by_setting = make_cache("by-setting", app=make_cluster_app(TTL=1))
    forever = make_cache("forever", ttl=1)
    by_call.set("k", "v", ttl=1)
    by_cache.set("k", 0)
    by_setting.mset({"k": False})
    forever.set("k", "kept", ttl=FOREVER)
    assert [c.get("k", MISS) for c in (by_call, by_cache, by_setting)] == [
        "v",
        0,
        False,
    ]
    assert eventually(
        lambda: all(c.get("k", MISS) is MISS for c in (by_call, by_cache, by_setting))
    )
    assert forever.get("k") == "kept"
    assert forever.ttl("k") == math.inf


def test_ttl_reports_seconds_left_inf_without_expiry_and_none_when_absent(
    cache: Cache,
):
    """ttl(key): seconds left (float), math.inf for no expiry, None for a miss;
    with no TTL anywhere an entry gets the store's TIMEOUT (Django's 300 s)."""
    cache.set("timed", 1, ttl=30)
    cache.set("untimed", 1, ttl=FOREVER)
    cache.set("default", 1)
    left = cache.ttl("timed")
    assert left is not None and 25 < left <= 30
    assert cache.ttl("untimed") == math.inf
    left = cache.ttl("default")
    assert left is not None and 290 < left <= 300
    assert cache.ttl("absent") is None


def test_reset_forgets_this_namespace_only_and_deletes_nothing(
    make_cache: Callable[..., Cache], store: str, redis_client: Any, unique_name: str
):
    """Resetting cache A leaves cache B and keys written by anything else in the
    store; A's old entries are still in the store, just unreadable (no scan)."""
    a, b = make_cache("a"), make_cache("b")
    a.mset({"k": 1, "j": 2})
    b.set("k", "b-value")
    other = caches[store]
    other_key = f"{unique_name}:written-by-someone-else"
    other.set(other_key, "theirs", 60)
    old_a, b_wire = a.store_key("k"), b.store_key("k")

    a.reset()

    assert a.get("k", MISS) is MISS and a.mget(["k", "j"]) == [None, None]
    assert b.get("k") == "b-value"
    assert other.get(other_key) == "theirs"
    assert in_store(b, b_wire, redis_client)
    assert in_store(a, old_a, redis_client)
    if a.store.shared:
        made = other.make_key(other_key)
        assert redis_client.exists(made) and redis_client.dbsize() > 0
    a.set("k", "after")
    assert a.get("k") == "after" and a.store_key("k") != old_a


def test_reset_on_one_node_is_seen_by_another(
    make_cache: Callable[..., Cache], make_cluster_app: Callable[..., ClusterApp]
):
    """Two apps of the same name share the namespace: a reset on one is a miss on
    the other at its next read (the generation is in the store)."""
    one = make_cache("shared", app=make_cluster_app())
    two = make_cache("shared", app=make_cluster_app())
    one.set("k", "v1")
    assert two.get("k") == "v1"
    two.reset()
    assert one.get("k", MISS) is MISS
    one.set("k", "v2")
    assert two.get("k") == "v2"


def test_apps_and_prefixes_are_isolated(
    make_cache: Callable[..., Cache],
    make_cluster_app: Callable[..., ClusterApp],
    unique_name: str,
):
    """Same cache name in two apps, or two prefixes in one app: no cross-talk;
    two caches given the same prefix share it."""
    mine = make_cache("c", app=make_cluster_app())
    theirs = make_cache("c", app=make_cluster_app(f"{unique_name}-x"))
    sibling = make_cache("c2", app=make_cluster_app(), prefix="c")
    stranger = make_cache("c3", app=make_cluster_app())
    mine.set("k", "mine")
    assert theirs.get("k", MISS) is MISS
    assert stranger.get("k", MISS) is MISS
    assert sibling.get("k") == "mine"
    # in braces: a Redis Cluster hash tag (one slot per namespace)
    assert mine.store_key("k").startswith(f"{{{unique_name}:c}}@")


@pytest.mark.parametrize("near", [False, True], ids=["plain", "near"])
def test_mget_default_tells_a_cached_none_from_a_miss(make_cache, near: bool):
    """mget(keys, default=SENTINEL) gives the sentinel for a miss only: a cached
    None (and every other falsy value) comes back as itself, with or without the
    near cache, whose hits and misses take another path."""
    cache = make_cache(near_cache=near)
    cache.mset({"none": None, "zero": 0, "one": 1})
    keys = ["none", "absent", "zero", "one"]
    assert cache.mget(keys, default=MISS) == [None, MISS, 0, 1]
    # again: with a near cache the found ones are now served locally
    assert cache.mget(keys, default=MISS) == [None, MISS, 0, 1]
    assert cache.mget(keys) == [None, None, 0, 1]  # default stays None
    assert asyncio.run(cache.amget(keys, default=MISS)) == [None, MISS, 0, 1]
    assert asyncio.run(cache.amget(keys, MISS)) == [None, MISS, 0, 1]


def test_mget_mset_mdel(cache: Cache):
    """mset takes a mapping or pairs; mget keeps order with None for misses; mdel."""
    cache.mset({"a": 1, "b": None})
    cache.mset([("c", 3), ("d", "")], ttl=30)
    assert cache.mget(["d", "x", "a", "b", "c"]) == ["", None, 1, None, 3]
    left = cache.ttl("c")
    assert left is not None and left <= 30
    cache.mdel(["a", "c", "x"])
    assert cache.mget(["a", "b", "c", "d"]) == [None, None, None, ""]
    assert cache.get("b", MISS) is None
    assert cache.mget([]) == []
    cache.mset({})
    cache.mdel([])


def test_batch_operations_make_one_many_key_store_call(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
):
    """mget/mset/mdel of 20 keys make one many-key store call each (plus the read
    of the namespace generation for writes); on Redis each is one round trip."""
    store = cache.store
    cache.get("warm")  # learn the generation
    calls: list[str] = []
    for name in ("fetch", "get_many", "set", "set_many", "delete_many", "add"):
        method = getattr(store, name)

        def counted(*args: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
            calls.append(_n)
            return _m(*args, **kw)

        monkeypatch.setattr(store, name, counted)
    trips: list[str] = []
    if store.shared:
        import redis.client

        command, execute = redis.Redis.execute_command, redis.client.Pipeline.execute

        def one_command(self: Any, *args: Any, **kw: Any) -> Any:
            trips.append(str(args[0]))
            return command(self, *args, **kw)

        def one_pipeline(self: Any, *args: Any, **kw: Any) -> Any:
            trips.append("PIPELINE")
            return execute(self, *args, **kw)

        monkeypatch.setattr(redis.Redis, "execute_command", one_command)
        monkeypatch.setattr(redis.client.Pipeline, "execute", one_pipeline)
        # a Redis Cluster client sends on its nodes' connections itself
        import redis.cluster

        cluster_command = redis.cluster.RedisCluster.execute_command
        cluster_pipeline = redis.cluster.ClusterPipeline.execute

        def one_cluster_command(self: Any, *args: Any, **kw: Any) -> Any:
            trips.append(str(args[0]))
            return cluster_command(self, *args, **kw)

        def one_cluster_pipeline(self: Any, *args: Any, **kw: Any) -> Any:
            trips.append("PIPELINE")
            return cluster_pipeline(self, *args, **kw)

        monkeypatch.setattr(
            redis.cluster.RedisCluster, "execute_command", one_cluster_command
        )
        monkeypatch.setattr(
            redis.cluster.ClusterPipeline, "execute", one_cluster_pipeline
        )
    keys = [f"k{i}" for i in range(20)]

    cache.mset({k: i for i, k in enumerate(keys)})
    assert calls == ["fetch", "set_many"]
    assert trips == (["MGET", "PIPELINE"] if store.shared else [])
    calls.clear()
    trips.clear()
    assert cache.mget(keys) == list(range(20))
    assert calls == ["fetch"]
    assert trips == (["MGET"] if store.shared else [])
    calls.clear()
    trips.clear()
    cache.mdel(keys)
    assert calls == ["fetch", "delete_many"]
    # redis-py sends a cluster's many-key DEL as a pipeline (one node: one slot)
    delete = (
        "PIPELINE" if getattr(store.backend, "_class", None) is ClusterClient else "DEL"
    )
    assert trips == (["MGET", delete] if store.shared else [])


def test_incr_is_an_atomic_counter(cache: Cache):
    """incr creates at delta, adds, goes negative, keeps a set int, and loses no
    update under 8 concurrent threads."""
    assert cache.incr("n") == 1
    assert cache.incr("n", 5) == 6
    assert cache.incr("n", -10) == -4
    assert cache.get("n") == -4
    cache.set("m", 41)
    assert cache.incr("m") == 42
    assert cache.incr("timed", 2, ttl=30) == 2
    left = cache.ttl("timed")
    assert left is not None and left <= 30

    def bump() -> None:
        for _ in range(25):
            cache.incr("hot")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert cache.get("hot") == 200


def test_counters_are_reset_with_their_namespace(cache: Cache):
    """A counter is in the namespace: reset() restarts it."""
    cache.incr("n", 7)
    cache.reset()
    assert cache.get("n", MISS) is MISS
    assert cache.incr("n") == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "é", "a/b", None, 5])
def test_bad_keys_raise_invalid_name(cache: Cache, key: Any):
    """A key that is not 1-200 characters of A-Z a-z 0-9 _ . : - is rejected."""
    for call in (
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.mget([key]),
        lambda: cache.mset({key: 1}),
        lambda: cache.wrap(key, lambda: 1),
        lambda: cache.incr(key),
    ):
        with pytest.raises(InvalidName):
            call()


def test_bad_arguments_raise_at_the_call(cache: Cache):
    """Bad ttl, delta or fn raise TypeError/ValueError naming the argument."""
    for ttl in (0, -1):
        with pytest.raises(ValueError, match="ttl"):
            cache.set("k", 1, ttl=ttl)
    for ttl in ("5", True):
        with pytest.raises(TypeError, match="ttl"):
            cache.set("k", 1, ttl=ttl)
    with pytest.raises(TypeError, match="delta"):
        cache.incr("k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn"):
        cache.wrap("k", 42)  # type: ignore[arg-type]
    assert cache.get("k", MISS) is MISS


def test_async_twins(cache: Cache):
    """Every operation has an a-prefixed coroutine twin with the same behaviour."""

    async def scenario() -> None:
        await cache.aset("k", None)
        assert await cache.aget("k", MISS) is None
        await cache.amset({"a": 0, "b": False}, ttl=30)
        assert await cache.amget(["a", "b", "x"]) == [0, False, None]
        left = await cache.attl("a")
        assert left is not None and left <= 30
        assert await cache.aincr("n", 3) == 3
        await cache.amdel(["a"])
        await cache.adelete("b")
        assert await cache.amget(["a", "b"]) == [None, None]
        await cache.areset()
        assert await cache.aget("k", MISS) is MISS

    asyncio.run(scenario())
