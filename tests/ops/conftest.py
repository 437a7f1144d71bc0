"""Fixtures of the operations-console tests."""

from __future__ import annotations

from typing import Any

import pytest

from mega_cluster.testing import wait_until

#: Short heartbeat timings so a node is seen dead within a second or two.
FAST_NODES = {"NODE_HEARTBEAT": 0.1, "NODE_TIMEOUT": 0.6}


def redis_settings(url: str, prefix: str) -> dict[str, Any]:
    """Locks, pub/sub on Redis (keys carrying ``prefix``) and the database queue."""
    return {
        "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url, "KEY_PREFIX": prefix}},
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": url}},
        "EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05},
    }


QUEUE_FAST = {
    "BACKEND": "database",
    "POLL_INTERVAL": 0.05,
    "RETRY_BASE": 0.01,
    "RETRY_CAP": 0.05,
    "LEASE": 2.0,
}


def cluster_value(kind: str, name: str) -> dict[str, Any]:
    """A whole MEGA_CLUSTER value: ``embedded`` (local locks, memory pub/sub,
    database queue and node store) or ``redis`` (locks, pub/sub, nodes in Redis)."""
    from django.conf import settings

    value: dict[str, Any] = {"APP_NAME": name, **FAST_NODES}
    if kind == "redis":
        value.update(redis_settings(settings.REDIS_URL, settings.KEY_PREFIX))
    value["EVENT_QUEUE"] = dict(QUEUE_FAST)
    return value


CLUSTERS = [
    pytest.param(
        "embedded", id="embedded", marks=pytest.mark.django_db(transaction=True)
    ),
    pytest.param(
        "redis",
        id="redis",
        marks=[pytest.mark.redis, pytest.mark.django_db(transaction=True)],
    ),
]


@pytest.fixture(params=CLUSTERS)
def cluster(request, unique_name):
    """MEGA_CLUSTER set to one app on the backend under test; yields that app."""
    from mega_cluster.registry import get_app
    from mega_cluster.testing import cluster_settings

    value = cluster_value(request.param, unique_name)
    with cluster_settings(value):
        app = get_app()
        app.kind = request.param
        app.value = value
        yield app


class Failing:
    """A handler that always raises (with a recognisable message)."""

    def __call__(self, payload: Any, ctx: Any) -> None:
        raise RuntimeError(f"boom on {payload!r}")


def dead_letter(app: Any, channel: str = "orders", payload: Any = None) -> str:
    """Publish an event that a second node fails once, and wait until it is dead."""
    from mega_cluster.testing import make_app

    settings_ = {k: v for k, v in app.value.items() if k != "APP_NAME"}
    worker = make_app(app.name, settings_, node_id=f"{app.name}-failing-worker")
    worker.event_queue.subscribe(channel, process=Failing(), max_retries=0)
    worker.start()
    try:
        event_id = app.event_queue.publish(
            channel, payload if payload is not None else {"n": 1}, max_retries=0
        )
        wait_until(
            lambda: any(d.id == event_id for d in app.event_queue.dead_letters()),
            what="the dead letter",
        )
    finally:
        worker.stop()
    return event_id
