"""Lock backend configuration: checks, errors at construction, redis via CACHES."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from mega_cluster import checks
from mega_cluster.exceptions import BackendUnavailable, ConfigurationError
from mega_cluster.locks.backends.database import DatabaseLockBackend
from mega_cluster.locks.backends.redis import RedisLockBackend
from mega_cluster.testing import make_app
from tests.servers import free_port


def ids(messages):
    return [m.id for m in messages]


def test_local_backend_warns_when_debug_is_false():
    """The process-local backend is flagged W001 (not cluster-safe) in production."""
    value = {"APP_NAME": "w", "LOCKS": {"BACKEND": "local"}}
    with override_settings(MEGA_CLUSTER=value, DEBUG=False):
        messages = [m for m in checks.check_settings() if "LOCKS" in m.msg]
    assert ids(messages) == ["mega_cluster.W001"]
    assert isinstance(messages[0], CheckWarning)


@pytest.mark.parametrize("backend", ["redis", "database"])
def test_shared_backends_do_not_warn(backend):
    locks = {"BACKEND": backend, "OPTIONS": {"URL": settings.REDIS_URL}}
    if backend == "database":
        locks["OPTIONS"] = {}
    with override_settings(MEGA_CLUSTER={"LOCKS": locks}, DEBUG=False):
        assert [m for m in checks.check_settings() if "LOCKS" in m.msg] == []


def test_redis_without_url_or_cache_is_a_check_error():
    """E012 names both ways to point the redis backend at a server."""
    with override_settings(MEGA_CLUSTER={"LOCKS": {"BACKEND": "redis"}}):
        messages = [m for m in checks.check_settings() if "LOCKS" in m.msg]
    assert ids(messages) == ["mega_cluster.E012"]
    assert "URL" in messages[0].msg and "CACHE" in messages[0].msg


def test_database_backend_with_unknown_alias_is_a_check_error():
    locks = {"BACKEND": "database", "OPTIONS": {"DATABASE": "nope"}}
    with override_settings(MEGA_CLUSTER={"LOCKS": locks}):
        messages = [m for m in checks.check_settings() if "LOCKS" in m.msg]
    assert ids(messages) == ["mega_cluster.E012"]
    assert "'nope'" in messages[0].msg


def test_building_a_manager_with_bad_options_raises_improperly_configured(
    unique_name,
):
    """Misconfiguration is ImproperlyConfigured at first use, never a downgrade."""
    app = make_app(unique_name, {"LOCKS": {"BACKEND": "redis"}})
    with pytest.raises(ConfigurationError) as info:
        app.lock_manager  # noqa: B018
    assert isinstance(info.value, ImproperlyConfigured)
    assert "OPTIONS['URL']" in str(info.value)


def test_check_options_of_each_backend():
    assert RedisLockBackend.check_options({"URL": "redis://x"}) == []
    assert RedisLockBackend.check_options({"CACHE": "redis"}) == []
    assert DatabaseLockBackend.check_options({"POLL_INTERVAL": 0}) != []


def test_unreachable_redis_raises_backend_unavailable_with_the_driver_error(
    unique_name,
):
    """Nothing listens on the port: BackendUnavailable, cause = redis error."""
    import redis

    url = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(
        unique_name, {"LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url}}}
    )
    try:
        manager = app.lock_manager
        for call in (
            lambda: manager.try_acquire("k"),
            lambda: manager.acquire("k", wait=1),
            manager.list_locks,
            lambda: manager.force_release("k"),
        ):
            with pytest.raises(BackendUnavailable) as info:
                call()
            assert isinstance(info.value.__cause__, redis.ConnectionError)
        assert manager.stats()["held"] == 0
    finally:
        app.stop()


@pytest.mark.redis
@pytest.mark.parametrize("alias", ["redis", "django_redis"])
def test_redis_backend_reuses_a_cache_connection(unique_name, alias):
    """OPTIONS['CACHE'] = a Django RedisCache or django-redis alias works the same."""
    locks = {"BACKEND": "redis", "OPTIONS": {"CACHE": alias}}
    first = make_app(unique_name, {"LOCKS": locks})
    second = make_app(unique_name, {"LOCKS": locks})
    try:
        lock = first.lock_manager.acquire("cached", ttl=5)
        assert second.lock_manager.try_acquire("cached") is None
        lock.release()
        assert second.lock_manager.try_acquire("cached") is not None
    finally:
        first.stop()
        second.stop()


def test_cache_option_pointing_at_a_non_redis_cache_is_improperly_configured(
    unique_name,
):
    locks = {"BACKEND": "redis", "OPTIONS": {"CACHE": "default"}}
    app = make_app(unique_name, {"LOCKS": locks})
    try:
        with pytest.raises(ImproperlyConfigured, match="not a Redis cache"):
            app.lock_manager.try_acquire("k")
    finally:
        app.stop()


def _pooled_databases() -> dict:
    pooled = {**settings.DATABASES["postgres"], "DISABLE_SERVER_SIDE_CURSORS": True}
    return {**settings.DATABASES, "pooled": pooled}


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({"DATABASE": "pooled"}, True),
        ({"DATABASE": "pooled", "LISTEN_DATABASE": "postgres"}, False),
        ({"DATABASE": "postgres"}, False),
    ],
)
def test_listen_through_a_transaction_pooler_is_w008(options, warned):
    """A database marked as behind PgBouncer (DISABLE_SERVER_SIDE_CURSORS, as
    Django documents) would lose LISTEN's notifications: W008 unless
    LISTEN_DATABASE names a direct alias."""
    value = {"LOCKS": {"BACKEND": "database", "OPTIONS": options}}
    with override_settings(MEGA_CLUSTER=value, DATABASES=_pooled_databases()):
        found = [m for m in checks.check_settings() if m.id == "mega_cluster.W008"]
    assert bool(found) == warned
    if warned:
        assert "LISTEN_DATABASE" in found[0].hint and "'pooled'" in found[0].msg


def test_an_unknown_listen_database_is_a_check_error():
    problems = DatabaseLockBackend.check_options({"LISTEN_DATABASE": "nope"})
    assert problems and "LISTEN_DATABASE" in problems[0]
