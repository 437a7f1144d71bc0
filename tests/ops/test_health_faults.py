"""The health view under faults: a frozen Redis, a dead Celery broker, and the
databases that the backends use besides ``default``. Each server is the test's
own instance (tests/servers.py), never the shared one."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import reverse

from mega_cluster.testing import cluster_settings

from ..events.conftest import proxied_store  # noqa: F401 - a fixture
from ..servers import redis_server

pytestmark = pytest.mark.django_db(transaction=True)

#: Far below the 20 s the view took before every backend was pinged at once with
#: one deadline (HEALTH_TIMEOUT is 2 s below), far above that deadline: proves the
#: view is bounded without being a timing test.
BOUND = 8.0


def _app_name(suffix: str) -> str:
    return f"t{settings.RUN_ID}{suffix}"[:50]


def test_health_answers_503_within_the_deadline_when_redis_is_frozen(client):
    """With the Redis of the locks, pub/sub, cache store and node registry frozen
    (SIGSTOP: connections are accepted, nothing answers), the view answers 503
    within its deadline and names every check that failed; the process-local
    event queue and the database stay ok."""
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        name = _app_name("fz")
        value = {
            "APP_NAME": name,
            "HEALTH_TIMEOUT": 2.0,
            "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url}},
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": url}},
            "EVENT_QUEUE": {"BACKEND": "memory"},
            "CACHE": {"DEFAULT_STORE": "frozen_redis"},
        }
        caches_ = {
            **settings.CACHES,
            "frozen_redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
            },
        }
        with override_settings(CACHES=caches_), cluster_settings(value):
            up = client.get(reverse("mega_cluster:health"))
            assert up.status_code == 200, up.json()
            server.freeze()
            try:
                started = time.monotonic()
                down = client.get(reverse("mega_cluster:health"))
                elapsed = time.monotonic() - started
            finally:
                server.thaw()
    assert down.status_code == 503, down.content
    assert elapsed < BOUND, f"the view took {elapsed:.1f}s with Redis frozen"
    body = down.json()
    checks = body["apps"][name]
    failed = {key for key, check in checks.items() if not check["ok"]}
    assert failed == {"locks", "pubsub", "cache", "nodes"}, checks
    for key in failed:
        assert checks[key]["error"] in ("TimeoutError", "Timeout"), checks[key]
    assert checks["event_queue"]["ok"] is True
    assert body["databases"]["default"]["ok"] is True


@pytest.mark.celery
def test_health_names_a_dead_celery_broker(client):
    """The Celery event queue's broker is pinged (it used to be skipped, giving 200
    "event_queue ok" with the broker dead): once its Redis is gone the view is
    503 naming ``event_queue``, while the event store's database is ok."""
    with redis_server() as broker:
        name = _app_name("cb")
        value = {
            "APP_NAME": name,
            "HEALTH_TIMEOUT": 2.0,
            "EVENT_QUEUE": {
                "BACKEND": "celery",
                "OPTIONS": {"BROKER_URL": f"redis://127.0.0.1:{broker.port}/0"},
            },
        }
        with cluster_settings(value):
            up = client.get(reverse("mega_cluster:health"))
            assert up.status_code == 200, up.json()
            assert up.json()["apps"][name]["event_queue"]["backend"] == "celery"
            broker.stop()
            started = time.monotonic()
            down = client.get(reverse("mega_cluster:health"))
            elapsed = time.monotonic() - started
    assert down.status_code == 503, down.content
    assert elapsed < BOUND
    body = down.json()
    checks = body["apps"][name]
    assert checks["event_queue"]["ok"] is False, checks
    assert checks["event_queue"]["backend"] == "celery"
    assert [key for key, check in checks.items() if not check["ok"]] == ["event_queue"]
    assert body["databases"]["default"]["ok"] is True
    assert str(broker.port) not in down.content.decode()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_health_pings_every_database_the_backends_use(
    client,
    proxied_store,  # noqa: F811
):
    """A ``DATABASE`` option other than ``default`` is pinged too: cut off (through
    a TCP proxy), the view is 503 and ``databases.proxied`` names who uses it."""
    name = _app_name("db")
    value = {
        "APP_NAME": name,
        "HEALTH_TIMEOUT": 2.0,
        "LOCKS": {"BACKEND": "database", "OPTIONS": {"DATABASE": "proxied"}},
        "EVENT_QUEUE": {"BACKEND": "database", "OPTIONS": {"DATABASE": "proxied"}},
    }
    with cluster_settings(value):
        up = client.get(reverse("mega_cluster:health"))
        assert up.status_code == 200, up.json()
        databases = up.json()["databases"]
        assert set(databases) >= {"default", "proxied"}
        assert f"{name}.locks" in databases["proxied"]["used_by"]
        assert f"{name}.event_queue" in databases["proxied"]["used_by"]
        proxied_store.cut()
        try:
            started = time.monotonic()
            down = client.get(reverse("mega_cluster:health"))
            elapsed = time.monotonic() - started
        finally:
            proxied_store.restore()
    assert down.status_code == 503, down.content
    assert elapsed < BOUND
    body = down.json()
    assert body["databases"]["proxied"]["ok"] is False
    assert body["databases"]["default"]["ok"] is True
    checks = body["apps"][name]
    assert checks["locks"]["ok"] is False and checks["event_queue"]["ok"] is False
