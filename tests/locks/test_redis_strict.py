"""Redis locks with OPTIONS["STRICT"]: a grant or extension counts only once a
replica acknowledged it (WAIT), else it fails closed."""

from __future__ import annotations

import pytest
from django.conf import settings

from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.locks.backends.redis import RedisLockBackend
from mega_cluster.testing import make_app

pytestmark = pytest.mark.redis


def _app(name: str, url: str, **options):
    return make_app(
        name,
        {
            "LOCKS": {
                "BACKEND": "redis",
                "OPTIONS": {"URL": url, "STRICT": True, **options},
            }
        },
    )


def test_without_a_replica_a_strict_grant_fails_closed_and_leaves_the_key_free(
    unique_name,
):
    """The suite's shared Redis has no replica: nothing can acknowledge, so the
    acquire raises and the grant the primary made is undone."""
    app = _app(unique_name, settings.REDIS_URL, REPLICA_TIMEOUT=0.05)
    plain = make_app(
        unique_name,
        {"LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}}},
    )
    try:
        with pytest.raises(BackendUnavailable, match="0 of 1 replica"):
            app.lock_manager.acquire("k", wait=0)
        assert plain.lock_manager.list_locks() == []
        assert plain.lock_manager.try_acquire("k") is not None
    finally:
        app.stop()
        plain.stop()


def test_with_a_replica_strict_grants_and_extensions_are_acknowledged(
    sentinel_topology, unique_name
):
    import redis

    app = _app(unique_name, sentinel_topology.url)
    try:
        lock = app.lock_manager.acquire("k", ttl=5, wait=1)
        assert lock.extend(5)
        # the replica has the lease and the fence the holder was given
        replica = sentinel_topology.replica
        with redis.Redis(port=replica.port) as client:
            key = f"mc:{{{unique_name}}}:L:k"
            assert int(client.hget(key, "fence")) == lock.fence
        lock.release()
    finally:
        app.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"STRICT": "yes"}, "STRICT'] must be True or False"),
        ({"STRICT": True, "CLUSTER": True}, "not available on a Redis Cluster"),
        ({"STRICT": True, "REPLICAS": 0}, "REPLICAS'] must be a whole number"),
        ({"STRICT": True, "REPLICA_TIMEOUT": 0}, "REPLICA_TIMEOUT'] must be"),
    ],
)
def test_bad_strict_options_are_check_errors(options, message):
    problems = RedisLockBackend.check_options({"URL": "redis://h:1/0", **options})
    assert any(message in p for p in problems), problems
