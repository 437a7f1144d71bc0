"""The near cache (L1): per process, off by default, kept coherent by pub/sub.

Two apps of one name with their own node ids act as two nodes in this process
(multi-process proof: tests/cluster/test_cache_near.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mega_cluster.cache import Cache
from mega_cluster.registry import ClusterApp
from mega_cluster.testing import make_app

from .conftest import app_settings

pytestmark = pytest.mark.redis
MISS = object()


@pytest.fixture
def nodes(unique_name: str) -> Iterator[Callable[..., tuple[Cache, Cache]]]:
    """``nodes(**create_cache_kwargs)``: the same cache on two nodes (django-redis
    store, Redis pub/sub)."""
    apps: list[ClusterApp] = []

    def build(**kwargs: Any) -> tuple[Cache, Cache]:
        pair = []
        for node in ("n1", "n2"):
            app = make_app(unique_name, app_settings("django_redis"), node_id=node)
            apps.append(app)
            pair.append(app.cache_manager.create_cache("near", **kwargs))
        return pair[0], pair[1]

    yield build
    for app in apps:
        app.stop()


def seen_within(cache: Cache, key: str, expected: Any, timeout: float = 5.0) -> float:
    """Seconds until ``cache.get(key)`` returns ``expected`` (fails after timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cache.get(key, MISS) == expected:
            return time.monotonic() - start
        time.sleep(0.002)
    raise AssertionError(f"{key!r} never became {expected!r}: {cache.get(key, MISS)!r}")


def sneak(cache: Cache, key: str, value: Any) -> None:
    """Write to the store behind the cache's back: no invalidation is sent."""
    cache.store.set(cache.store_key(key), value, None)


def test_near_cache_is_off_by_default(nodes: Callable[..., tuple[Cache, Cache]]):
    """Without near_cache=True every read goes to the store."""
    one, two = nodes()
    assert not one.near_cache
    one.set("k", "v0")
    assert two.get("k") == "v0"
    sneak(one, "k", "sneaky")
    assert two.get("k") == "sneaky"


def test_reads_are_served_locally_until_another_node_writes(
    nodes: Callable[..., tuple[Cache, Cache]],
):
    """Node 2 serves a read key from memory (a write behind the cache's back is not
    seen); a set, delete, mset, mdel, incr or reset on node 1 reaches it."""
    one, two = nodes(near_cache=True)
    one.set("k", "v0")
    assert two.get("k") == "v0"
    sneak(one, "k", "sneaky")
    assert two.get("k") == "v0", "node 2 did not serve the key from its near cache"

    one.set("k", "v1")
    seen_within(two, "k", "v1")
    one.delete("k")
    seen_within(two, "k", MISS)

    one.mset({"a": 1, "b": 2})
    assert two.mget(["a", "b"]) == [1, 2]
    one.mset({"a": 10})
    seen_within(two, "a", 10)
    one.mdel(["b"])
    seen_within(two, "b", MISS)

    one.set("n", 1)
    assert two.get("n") == 1
    one.incr("n")
    seen_within(two, "n", 2)

    two.get("a")
    one.reset()
    seen_within(two, "a", MISS)


def test_a_nodes_own_writes_refresh_its_near_cache(
    nodes: Callable[..., tuple[Cache, Cache]],
):
    """A node's own set is visible to it at once (skip_self does not leave it stale)."""
    one, _ = nodes(near_cache=True)
    one.set("k", "v0")
    assert one.get("k") == "v0"
    one.set("k", "v1")
    assert one.get("k") == "v1"
    one.reset()
    assert one.get("k", MISS) is MISS


def test_near_entries_live_at_most_near_ttl(nodes: Callable[..., tuple[Cache, Cache]]):
    """near_ttl bounds how long a near entry can outlive a lost invalidation."""
    one, two = nodes(near_cache=True, near_ttl=0.3)
    one.set("k", "v0")
    assert two.get("k") == "v0"
    sneak(one, "k", "sneaky")
    assert two.get("k") == "v0"
    seen_within(two, "k", "sneaky", timeout=5)


def test_wrap_serves_from_the_near_cache(nodes: Callable[..., tuple[Cache, Cache]]):
    """wrap on a key held in the near cache neither reads the store nor computes."""
    one, two = nodes(near_cache=True)
    assert two.wrap("k", lambda: "computed") == "computed"
    sneak(one, "k", "sneaky")
    assert two.wrap("k", lambda: "again") == "computed"


@pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
def test_a_forked_child_starts_with_an_empty_near_cache(
    nodes: Callable[..., tuple[Cache, Cache]],
):
    """After fork the child forgets the parent's near entries and subscription (it
    subscribes again on first use); the parent keeps its own."""
    import os

    one, two = nodes(near_cache=True)
    one.set("k", "v0")
    assert two.get("k") == "v0" and len(two._near or ()) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never run pytest's teardown
        code = 1
        try:
            fresh = len(two._near or ()) == 0 and two._unsubscribe is None
            code = 0 if fresh else 2
        finally:
            os.write(write, str(code).encode())
            os._exit(code)
    os.close(write)
    try:
        assert os.read(read, 10) == b"0"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert len(two._near or ()) == 1
