"""Celery-backend extras: configuration errors, the project's own Celery app."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from mega_cluster.checks import check_settings
from mega_cluster.exceptions import ConfigurationError
from mega_cluster.testing import make_app

from .conftest import celery_options, wait_until

#: A project's Celery app, as OPTIONS["APP"] names it.
project_celery = None


def test_celery_needs_app_or_broker_url(unique_name):
    """Neither APP nor BROKER_URL: check error E012 naming both, and at build time."""
    settings = {"EVENT_QUEUE": {"BACKEND": "celery"}}
    with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **settings}):
        messages = check_settings()
    assert any(
        m.id == "mega_cluster.E012" and "BROKER_URL" in m.msg and "APP" in m.msg
        for m in messages
    ), messages
    with pytest.raises(ConfigurationError, match="BROKER_URL"):
        make_app(unique_name, settings).event_queue  # noqa: B018


@pytest.mark.django_db(transaction=True)
def test_unimportable_celery_app_is_a_configuration_error(unique_name):
    """OPTIONS['APP'] that cannot be imported fails at the first publish, saying so."""
    app = make_app(
        unique_name,
        {"EVENT_QUEUE": {"BACKEND": "celery", "OPTIONS": {"APP": "no.such.app"}}},
    )
    with pytest.raises(ConfigurationError, match=r"no\.such\.app"):
        app.event_queue.publish("c", 1)
    assert app.event_queue.stats("c") == {}  # nothing left queued


@pytest.mark.celery
@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_project_celery_app_and_one_embedded_worker_per_process(unique_name):
    """OPTIONS['APP'] uses the project's Celery app (our task registered on it); a
    second Celery-backed app consuming in the same process is refused clearly."""
    from celery import Celery

    global project_celery
    options = celery_options("default")
    project_celery = Celery("project", broker=options.pop("BROKER_URL"))
    project_celery.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)
    options["APP"] = f"{__name__}.project_celery"
    app = make_app(
        unique_name, {"EVENT_QUEUE": {"BACKEND": "celery", "OPTIONS": options}}
    )
    other = make_app(
        f"{unique_name}b"[:50],
        {"EVENT_QUEUE": {"BACKEND": "celery", "OPTIONS": celery_options("default")}},
    )
    try:
        seen = []
        app.event_queue.subscribe("c", process=lambda p, ctx: seen.append(p))
        app.start()
        assert "mega_cluster.events.deliver" in project_celery.tasks
        app.event_queue.publish("c", "via the project's app")
        wait_until(lambda: seen, what="the event")
        other.event_queue.subscribe("c", process=print)
        with pytest.raises(ConfigurationError, match="embedded Celery worker"):
            other.start()
    finally:
        other.stop()
        app.stop()


@pytest.mark.celery
@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_duplicate_message_while_running_does_not_run_twice(unique_name):
    """A second message for a running event (as Redis' visibility timeout sends)
    waits for the lease instead of running the event concurrently."""
    import threading

    from .conftest import queue_settings

    app = make_app(unique_name, queue_settings("celery", "postgres"))
    release = threading.Event()
    attempts = []

    def handler(payload, ctx):
        attempts.append(ctx.attempt)
        release.wait(10)

    try:
        app.event_queue.subscribe("dup", process=handler, concurrency=2)
        app.start()
        event_id = app.event_queue.publish("dup", 1)
        wait_until(lambda: attempts, what="the first attempt")
        app.event_queue.backend.broker.send("dup", event_id)  # the duplicate message
        release_at = threading.Timer(1.0, release.set)
        release_at.start()
        wait_until(lambda: app.event_queue.stats("dup")["dup"]["succeeded"] == 1)
        wait_until(lambda: release.is_set())
        release_at.join()
        assert attempts == [1]
    finally:
        release.set()
        app.stop()


@pytest.mark.celery
@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_admin_queues_page_lists_events_and_oldest_pending_age(unique_name):
    """On the Celery backend (RabbitMQ, events kept in PostgreSQL) ``events()`` and
    ``oldest_pending()`` answer, and the admin Queues page shows the oldest pending
    age and lists pending and dead events."""

    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    from mega_cluster.registry import get_app
    from mega_cluster.testing import cluster_settings

    from .conftest import queue_settings

    settings = queue_settings("celery", "postgres")

    def failing(payload, ctx):
        raise RuntimeError(f"boom on {payload!r}")

    with cluster_settings({"APP_NAME": unique_name, **settings}):
        app = get_app()
        worker = make_app(unique_name, settings, node_id=f"{unique_name}-worker")
        worker.event_queue.subscribe("orders", process=failing, max_retries=0)
        worker.start()
        try:
            dead_id = app.event_queue.publish("orders", {"order": 7})
            wait_until(
                lambda: [d.id for d in app.event_queue.dead_letters()] == [dead_id],
                what="the dead letter",
            )
        finally:
            worker.stop()
        before = time.time()
        pending_id = app.event_queue.publish("mail", {"to": "x"})  # not consumed
        since = app.event_queue.backend.oldest_pending("mail")
        assert since is not None and before - 1 <= since <= time.time()
        assert app.event_queue.backend.oldest_pending("orders") is None
        listed = {(e.id, e.status) for e in app.event_queue.events()}
        assert listed == {(dead_id, "dead"), (pending_id, "pending")}
        (pending,) = app.event_queue.events("mail", "pending")
        assert (pending.payload, pending.attempts) == ({"to": "x"}, 0)

        user = User.objects.create_user("ops", password="pw", is_staff=True)
        user.is_superuser = True
        user.save()
        client = Client()
        client.force_login(user)
        page = client.get(reverse("admin:mega_cluster_clusterqueue_changelist"))
        assert page.status_code == 200
        rows = {row["channel"]: row for row in page.context["rows"]}
        assert rows["mail"]["pending"] == 1
        assert rows["mail"]["oldest_pending_age"] is not None
        assert (rows["orders"]["dead"], rows["orders"]["failed"]) == (1, 1)
        events = {(e["id"], e["status"]) for e in page.context["events"]}
        assert events == {(dead_id, "dead"), (pending_id, "pending")}
        dead = page.context["events"]
        assert any("boom on" in " ".join(e["error"]) for e in dead)


@pytest.mark.celery
@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_message_argsrepr_names_the_event_without_its_payload(unique_name):
    """What monitors show for an event's message (the ``argsrepr`` header): app,
    event id and channel, not the payload (Celery's own repr of it is costly)."""
    from celery.signals import before_task_publish

    from .conftest import queue_settings

    app = make_app(unique_name, queue_settings("celery", "postgres"))
    shown = []

    def capture(sender=None, headers=None, **kwargs):
        shown.append(headers.get("argsrepr"))

    before_task_publish.connect(capture)
    try:
        event_id = app.event_queue.publish("shown", {"secret": "x" * 50})
        app.event_queue.backend.broker.send("shown", event_id)
        assert shown == [
            f"[{unique_name!r}, {event_id!r}, 'shown', <event>]",
            f"[{unique_name!r}, {event_id!r}, 'shown']",
        ]
        (pending,) = app.event_queue.events("shown", "pending")
        assert (pending.id, pending.payload) == (event_id, {"secret": "x" * 50})
    finally:
        before_task_publish.disconnect(capture)
        app.stop()


@pytest.mark.celery
@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_early_message_waits_until_the_event_is_due(unique_name):
    """A message that arrives before its event is due (a duplicate, or one handed
    back to the broker at a shutdown) does not run the retry early: the event is
    looked at again when its retry is due, and runs once."""
    from .conftest import queue_settings

    app = make_app(
        unique_name,
        queue_settings("celery", "postgres", RETRY_BASE=2.0, RETRY_CAP=2.0),
    )
    starts = []

    def handler(payload, ctx):
        starts.append((ctx.attempt, time.monotonic()))
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    try:
        app.event_queue.subscribe("early", process=handler)
        app.start()
        event_id = app.event_queue.publish("early", 1, max_retries=1)
        wait_until(
            lambda: app.event_queue.stats("early")["early"]["failed"] == 1,
            what="the failed first attempt",
        )
        app.event_queue.backend.broker.send("early", event_id)  # comes 1-2 s early
        wait_until(lambda: len(starts) == 2, timeout=15, what="the retry")
        (first, t1), (second, t2) = starts
        assert (first, second) == (1, 2)
        assert t2 - t1 >= 0.9  # the backoff of 2 s with jitter is 1-2 s
        wait_until(
            lambda: app.event_queue.stats("early")["early"]["succeeded"] == 1,
            what="the outcome",
        )
        time.sleep(0.3)
        assert len(starts) == 2
    finally:
        app.stop()
