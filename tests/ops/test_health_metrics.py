"""The JSON health view and the Prometheus metrics view."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import reverse

from mega_cluster import metrics
from mega_cluster.registry import get_app
from mega_cluster.testing import cluster_settings

from ..servers import redis_server

pytestmark = pytest.mark.django_db


def test_health_is_open_and_reports_every_backend(client):
    """Anonymous GET answers 200 with each backend, this node and its uptime."""
    response = client.get(reverse("mega_cluster:health"))
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    body = response.json()
    assert body["status"] == "ok"
    app = get_app()
    assert body["node"]["id"] == app.node_id
    assert body["node"]["role"] == "web"
    assert body["uptime"] >= 0
    checks = body["apps"][app.name]
    assert set(checks) == {"locks", "pubsub", "event_queue", "cache", "nodes"}
    assert checks["cache"]["backend"] == "default" and checks["cache"]["ok"]
    assert checks["locks"] == {
        "backend": "local",
        "ok": True,
        "circuit": "closed",
        **_lat(checks["locks"]),
    }
    assert all(check["ok"] for check in checks.values())
    assert body["databases"]["default"]["ok"]
    assert body["databases"]["default"]["used_by"][0] == "mega_cluster"


def _lat(check):
    return {"latency_ms": check["latency_ms"]}


def test_health_is_503_when_a_configured_backend_is_down(client):
    """A Redis lock backend that stops answering turns the view 503 and says which."""
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        value = {
            "APP_NAME": f"t{settings.RUN_ID}h"[:50],
            "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url, "SOCKET_TIMEOUT": 1}},
            "CACHE": {"DEFAULT_STORE": "private_redis"},
        }
        caches_ = {
            **settings.CACHES,
            "private_redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
            },
        }
        with override_settings(CACHES=caches_), cluster_settings(value):
            up = client.get(reverse("mega_cluster:health"))
            assert up.status_code == 200, up.content
            assert up.json()["apps"][value["APP_NAME"]]["nodes"]["backend"] == "redis"
            server.stop()
            down = client.get(reverse("mega_cluster:health"))
    assert down.status_code == 503
    body = down.json()
    checks = body["apps"][value["APP_NAME"]]
    assert body["status"] == "unavailable"
    assert checks["locks"]["ok"] is False and checks["locks"]["backend"] == "redis"
    assert checks["nodes"]["ok"] is False
    assert checks["pubsub"]["ok"] is True  # memory: still fine
    assert checks["cache"]["ok"] is False  # the Redis cache store is down too
    # No secrets: neither the server address nor the secret key is in the body.
    text = down.content.decode()
    assert str(server.port) not in text and settings.SECRET_KEY not in text


def test_health_only_answers_get(client):
    """POST is refused with 405: the view never changes state."""
    assert client.post(reverse("mega_cluster:health")).status_code == 405


def test_metrics_view_serves_counters_and_scrape_gauges(client):
    """Counters added with metrics.inc() and the queue/lock/node gauges are served."""
    app = get_app()
    metrics.inc("event_failures", app=app.name, channel="orders")
    metrics.observe("lock_wait_seconds", 0.25, app=app.name)
    lock = app.lock_manager.acquire("metrics-lock", ttl=30)
    try:
        response = client.get(reverse("mega_cluster:metrics"))
    finally:
        lock.release()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert (
        f'mega_cluster_event_failures_total{{app="{app.name}",channel="orders"}}'
        in text
    )
    assert f'mega_cluster_lock_wait_seconds_count{{app="{app.name}"}}' in text
    assert f'mega_cluster_locks_held{{app="{app.name}"}} 1.0' in text
    assert f'mega_cluster_nodes{{app="{app.name}",status="alive"}}' in text


def test_metric_helpers_reject_bad_names_and_labels():
    """A typo in a metric name or its labels fails at the call."""
    with pytest.raises(ValueError, match="Unknown metric"):
        metrics.inc("messages_publishd", app="a", channel="c")
    with pytest.raises(ValueError, match="takes labels"):
        metrics.inc("messages_published", app="a")
    with pytest.raises(ValueError, match="histogram"):
        metrics.inc("lock_wait_seconds", app="a")
    with pytest.raises(ValueError, match="counter"):
        metrics.observe("event_attempts", 1.0, app="a", channel="c")
    with pytest.raises(ValueError, match="counter"):
        metrics.histogram("event_attempts", app="a", channel="c")
    with pytest.raises(ValueError, match="histogram"):
        metrics.counter("lock_hold_seconds", app="a")


@pytest.mark.skipif(not metrics.ENABLED, reason="prometheus-client is not installed")
def test_lock_manager_reports_wait_and_hold_times(unique_name):
    """Each acquire observes its wait and each release the time the lock was held."""
    from mega_cluster.testing import make_app

    app = make_app(unique_name)

    def count(name):
        value = metrics.REGISTRY.get_sample_value(
            f"mega_cluster_{name}_count", {"app": unique_name}
        )
        return value or 0

    try:
        lock = app.lock_manager.acquire("timed", ttl=30)
        assert count("lock_wait_seconds") == 1 and count("lock_hold_seconds") == 0
        lock.release()
        assert count("lock_hold_seconds") == 1
        held = metrics.REGISTRY.get_sample_value(
            "mega_cluster_lock_hold_seconds_sum", {"app": unique_name}
        )
        assert 0 <= held < 5
    finally:
        app.stop()


@pytest.mark.skipif(not metrics.ENABLED, reason="prometheus-client is not installed")
def test_event_consumer_counts_attempts_failures_and_dead_letters(cluster):
    """A failing event with no retries: one attempt, one failure, one dead letter."""
    from .conftest import dead_letter

    dead_letter(cluster, "invoices")
    labels = {"app": cluster.name, "channel": "invoices"}
    for name in ("attempts", "failures", "dead_letters"):
        value = metrics.REGISTRY.get_sample_value(
            f"mega_cluster_event_{name}_total", labels
        )
        assert value == 1, name


@pytest.mark.skipif(not metrics.ENABLED, reason="prometheus-client is not installed")
def test_pubsub_counts_published_and_delivered_messages(unique_name):
    """A message sent between two nodes counts one publish and one delivery."""
    import threading

    from mega_cluster.testing import make_app

    sender = make_app(unique_name, node_id="sender")
    receiver = make_app(unique_name, node_id="receiver")
    got = threading.Event()
    try:
        receiver.pubsub_manager.subscribe("news", lambda message: got.set())
        sender.pubsub_manager.publish("news", {"n": 1})
        assert got.wait(10)
    finally:
        sender.stop()
        receiver.stop()
    labels = {"app": unique_name, "channel": "news"}
    sample = metrics.REGISTRY.get_sample_value
    assert sample("mega_cluster_messages_published_total", labels) == 1
    assert sample("mega_cluster_messages_delivered_total", labels) == 1


def _scrape(client):
    """The metrics view's samples as ``{(name, sorted labels): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get(reverse("mega_cluster:metrics"))
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


@pytest.mark.skipif(not metrics.ENABLED, reason="prometheus-client is not installed")
def test_pubsub_buffer_overflow_is_served_as_messages_dropped(client, unique_name):
    """Messages a full pub/sub buffer drops are counted in messages_dropped, as the
    metrics view shows."""
    import threading

    from mega_cluster.testing import make_app

    sender = make_app(unique_name, node_id=f"{unique_name}-sender")
    receiver = make_app(
        unique_name,
        {"PUBSUB": {"BACKEND": "memory", "BUFFER_SIZE": 3}},
        node_id=f"{unique_name}-receiver",
    )
    release = threading.Event()
    try:
        receiver.pubsub_manager.subscribe("flood", lambda message: release.wait(10))
        # the channel is not decoded yet when the buffer is full: label ""
        labels = (("app", unique_name), ("channel", ""))
        key = ("mega_cluster_messages_dropped_total", labels)
        assert _scrape(client).get(key, 0) == 0
        for n in range(20):  # memory: delivered into the buffer inside publish()
            sender.pubsub_manager.publish("flood", n)
        dropped = receiver.pubsub_manager.dropped
        assert 0 < dropped < 20
        assert _scrape(client)[key] == dropped
    finally:
        release.set()
        sender.stop()
        receiver.stop()


@pytest.mark.skipif(not metrics.ENABLED, reason="prometheus-client is not installed")
def test_queue_depth_gauge_is_served_per_channel_and_state(client, cluster):
    """mega_cluster_queue_events reports the event queue's depth per channel and
    state at each scrape: two pending events, then two succeeded once a worker has
    processed them."""
    from mega_cluster.testing import make_app, wait_until

    def depth(state):
        labels = (("app", cluster.name), ("channel", "gauged"), ("state", state))
        return _scrape(client).get(("mega_cluster_queue_events", labels))

    assert depth("pending") is None
    cluster.event_queue.publish("gauged", {"n": 1})
    cluster.event_queue.publish("gauged", {"n": 2})
    assert depth("pending") == 2
    assert depth("succeeded") == 0 and depth("dead") == 0

    settings_ = {k: v for k, v in cluster.value.items() if k != "APP_NAME"}
    worker = make_app(cluster.name, settings_, node_id=f"{cluster.name}-worker")
    worker.event_queue.subscribe("gauged", process=lambda payload, ctx: None)
    worker.start()
    try:
        wait_until(lambda: depth("succeeded") == 2, what="two succeeded events")
    finally:
        worker.stop()
    assert depth("pending") == 0
