"""Mix-ups an operator must see: two deployments sharing one APP_NAME on one broker
with different databases, and an event channel whose pending events no live node
consumes. Shown by cluster_status, the admin pages and the health view."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from mega_cluster.registry import registry
from mega_cluster.testing import cluster_settings, wait_until

from .startproject import make_project, user_env

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

KEEP_ALIVE = (
    "from mega_cluster import get_app\n"
    "import sys, time\n"
    "print('NODE', get_app().node_id, flush=True)\n"
    "time.sleep(120)\n"
)


def _admin() -> Client:
    user = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.redis
def test_two_deployments_on_one_app_name_and_broker_are_an_error(
    tmp_path: Path, unique_name: str
):
    value = {
        "APP_NAME": unique_name,
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        "NODE_HEARTBEAT": 0.2,
        "NODE_TIMEOUT": 5,
    }
    # the other deployment: its own project and SQLite database, same Redis and name
    other = make_project(tmp_path / "other", value)
    log = tmp_path / "other.log"
    with cluster_settings(value):
        app = registry.get()
        app.start()
        client = _admin()
        health = client.get(reverse("mega_cluster:health"))
        assert health.json()["cluster_apps"][unique_name]["database_clash"] is None
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "shell", "-c", KEEP_ALIVE],
                cwd=other,
                env=user_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            nodes = wait_until(
                lambda: (
                    len(app.node_registry.list_nodes(include_dead=False)) == 2
                    and app.node_registry.list_nodes()
                ),
                timeout=60,
                what=f"the other deployment's node:\n{log.read_text()}",
            )
            databases = {n.node_id: n.database for n in nodes}
            assert len(set(databases.values())) == 2 and all(databases.values())
            other_node = next(n for n in databases if n != app.node_id)
            message = (
                f"The live nodes of cluster app {unique_name!r} use 2 different "
                "databases ("
                + "; ".join(
                    f"database {db}: {node}"
                    for node, db in sorted(databases.items(), key=lambda i: i[1])
                )
                + f"). Two deployments share APP_NAME {unique_name!r} on one "
                "broker, so each receives the other's sync messages and events: "
                "give each deployment its own MEGA_CLUSTER APP_NAME (or its own "
                "Redis/NATS server)."
            )
            out = io.StringIO()
            with pytest.raises(CommandError) as info:
                call_command("cluster_status", stdout=out)
            assert str(info.value) == message
            assert f"ERROR: {message}" in out.getvalue()
            page = client.get(
                reverse("admin:mega_cluster_node_changelist"), {"app": unique_name}
            ).content.decode()
            assert '<li class="error mc-clash">' in page
            assert other_node in page and "2 different databases" in page
            health = client.get(reverse("mega_cluster:health"))
            assert health.status_code == 503
            assert health.json()["cluster_apps"][unique_name]["database_clash"] == (
                message
            )
        finally:
            proc.kill()
            proc.wait(timeout=10)
            app.stop()


def test_pending_events_that_no_live_node_consumes_are_flagged(unique_name):
    """'orphan' has a pending event and no consumer anywhere: flagged. 'gated'
    has one too, but a live node consumes it (its idle gate holds the event):
    not flagged."""
    value = {
        "APP_NAME": unique_name,
        "EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05},
        "NODE_HEARTBEAT": 0.2,
    }
    with cluster_settings(value):
        app = registry.get()
        queue = app.event_queue
        queue.subscribe("gated", process=lambda p, c: None, idle=lambda: False)
        app.start()
        queue.publish("gated", 1)
        queue.publish("orphan", 2)
        queue.publish("orphan", 3)
        wait_until(
            lambda: any(n.consumers for n in app.node_registry.list_nodes()),
            what="this node's consumer in its heartbeat",
        )
        warning = (
            "Channel 'orphan' has 2 pending event(s) and no live node consumes it: "
            "start 'manage.py runworker' (or set EVENT_QUEUE[\"CONSUME\"] on a node "
            "whose plugins subscribe it)."
        )
        out = io.StringIO()
        call_command("cluster_status", stdout=out)
        text = out.getvalue()
        assert f"WARNING: {warning}" in text
        assert "'gated'" not in text.split("Queues")[1]
        page = (
            _admin()
            .get(reverse("admin:mega_cluster_clusterqueue_changelist"))
            .content.decode()
        )
        assert (
            f'<li class="warning mc-unconsumed" data-channel="orphan">{escape(warning)}'
            in page
        )
        assert 'data-channel="gated">' not in page.split("Channels")[0]
        app.stop()
