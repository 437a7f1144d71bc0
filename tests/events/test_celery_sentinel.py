"""The celery event backend's broker behind Redis Sentinel: the documented settings
shape (a ``sentinel://`` URL, or SENTINELS + SERVICE_NAME + passwords) becomes
kombu's Sentinel transport, and a kill -9 of the broker's primary is survived by
the consumer: events published after the promotion run, after a bounded pause
(logged). The contract suite runs on Sentinel too (the celery-sentinel
parameter of tests/events/conftest.py)."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest
from django.test import override_settings

from mega_cluster.checks import check_settings
from mega_cluster.events.backends.celery.broker import Broker, sentinel_broker
from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.testing import make_app
from tests.topologies import redis_sentinel

from .conftest import FAST, wait_until

logger = logging.getLogger("tests.failover")


def test_the_sentinel_url_becomes_kombus_sentinel_transport():
    url, transport = sentinel_broker(
        {"BROKER_URL": "sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2:26380/svc/3"}
    )
    assert url == (
        "sentinel://u:p%40ss@10.0.0.1:26379/3;sentinel://u:p%40ss@10.0.0.2:26380/3"
    )
    assert transport["master_name"] == "svc"
    assert "password" not in transport["sentinel_kwargs"]


def test_the_spelled_out_sentinel_settings_carry_both_passwords():
    url, transport = sentinel_broker(
        {
            "SENTINELS": ["10.0.0.1:26379", ("10.0.0.2", 26380)],
            "SERVICE_NAME": "svc",
            "PASSWORD": "data-secret",
            "SENTINEL_PASSWORD": "sentinel-secret",
        }
    )
    assert url == (
        "sentinel://:data-secret@10.0.0.1:26379/0;"
        "sentinel://:data-secret@10.0.0.2:26380/0"
    )
    assert transport["master_name"] == "svc"
    assert transport["sentinel_kwargs"]["password"] == "sentinel-secret"


def test_kombus_own_sentinel_spelling_is_kept_as_it_is():
    options = {
        "BROKER_URL": "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379",
        "TRANSPORT_OPTIONS": {"master_name": "svc"},
    }
    assert sentinel_broker(options) is None
    assert sentinel_broker({"BROKER_URL": "redis://10.0.0.1:6379/0"}) is None


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"BROKER_URL": "sentinel://10.0.0.1:26379"}, "SERVICE_NAME"),
        ({"SENTINELS": ["10.0.0.1"], "SERVICE_NAME": "s"}, "host:port"),
        ({"SENTINELS": ["10.0.0.1:1"]}, "SERVICE_NAME"),
        ({"BROKER_URL": "sentinel://10.0.0.1:1;sentinel://10.0.0.2:1"}, "master_name"),
        (
            {"SENTINELS": ["10.0.0.1:1"], "SERVICE_NAME": "s", "APP": "x.y"},
            "only one",
        ),
    ],
)
def test_bad_sentinel_settings_are_a_check_error_naming_them(
    options, complaint, unique_name
):
    section = {"EVENT_QUEUE": {"BACKEND": "celery", "OPTIONS": options}}
    assert Broker.check_options(options)
    with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **section}):
        messages = check_settings()
    assert any(m.id == "mega_cluster.E012" and complaint in m.msg for m in messages), (
        messages
    )


def test_a_good_sentinel_url_passes_the_checks(unique_name):
    options = {"BROKER_URL": "sentinel://10.0.0.1:26379,10.0.0.2:26379/svc/0"}
    section = {"EVENT_QUEUE": {"BACKEND": "celery", "OPTIONS": options}}
    with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **section}):
        messages = check_settings()
    assert not [m for m in messages if m.id.startswith("mega_cluster.E")], messages


@pytest.mark.cluster
@pytest.mark.celery
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_the_consumer_survives_a_kill_9_of_the_brokers_primary(unique_name):
    handled: dict[int, float] = {}
    published: list[tuple[int, float]] = []
    stop = threading.Event()
    with redis_sentinel() as topology:
        section = {
            "EVENT_QUEUE": {
                "BACKEND": "celery",
                **FAST,
                "OPTIONS": {"BROKER_URL": topology.url, "DATABASE": "postgres"},
            }
        }
        app = make_app(unique_name, section)

        def handler(payload, ctx):
            handled.setdefault(payload, time.time())

        def publish_forever():
            n = 0
            while not stop.is_set():
                try:
                    app.event_queue.publish("ticks", n)
                except BackendUnavailable:
                    time.sleep(0.1)  # the broker is failing over: try again
                    continue
                published.append((n, time.time()))
                n += 1
                time.sleep(0.05)

        app.event_queue.subscribe("ticks", process=handler)
        app.start()
        publisher = threading.Thread(target=publish_forever, daemon=True)
        try:
            publisher.start()
            wait_until(lambda: len(handled) >= 20, timeout=60, what="20 events")
            killed_at = time.time()
            old = topology.kill_primary()
            topology.wait_promoted(old.port, timeout=60)
            promoted_at = time.time()
            wait_until(
                lambda: len([t for t in handled.values() if t > promoted_at]) >= 20,
                timeout=90,
                what="20 events handled after the promotion",
            )
        finally:
            stop.set()
            publisher.join(10)
        # every event published after the promotion runs; one the dying primary
        # took but had not replicated waits for RESEND_AFTER (docs/deployment.md)
        after = [n for n, t in published if t > promoted_at]
        wait_until(
            lambda: all(n in handled for n in after), timeout=60, what="the rest"
        )
        app.stop()
        lost = [n for n, _ in published if n not in handled]
    times = sorted(handled.values())
    pause = max(b - a for a, b in itertools.pairwise(times))
    logger.warning(
        "celery broker failover: %d events handled, work paused %.2f s "
        "(promotion %.2f s after the kill), not handled (published before the "
        "promotion): %s",
        len(handled),
        pause,
        promoted_at - killed_at,
        lost,
    )
    assert len(after) >= 20
