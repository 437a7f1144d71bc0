"""Real worker processes in the node registry: a kill -9 shows as dead, then goes."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from mega_cluster.registry import get_app
from mega_cluster.testing import cluster_settings

from .nodes_settings import NODES_FAST, cluster_value

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def admin_nodes(client):
    return {
        row["pid"]: row
        for row in client.get(reverse("admin:mega_cluster_node_changelist")).context[
            "rows"
        ]
    }


def status_nodes():
    out = io.StringIO()
    call_command("cluster_status", "--json", stdout=out)
    (snap,) = json.loads(out.getvalue())["apps"]
    return {node["pid"]: node for node in snap["nodes"]}


def test_killed_worker_shows_dead_then_drops_out(procs, unique_name):
    """Two runworker nodes beat as workers; after kill -9 of one, Nodes and
    cluster_status --json show it dead after NODE_TIMEOUT while the other stays
    alive, and it is gone after twice the timeout; a SIGTERM-ed worker leaves at once."""
    env = {
        "MC_CHILD_SETTINGS": "tests.cluster.nodes_settings",
        "MC_APP_NAME": unique_name,
    }
    victim = procs.spawn(["manage.py", "runworker"], env)
    survivor = procs.spawn(["manage.py", "runworker"], env)
    admin = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    with cluster_settings(cluster_value(unique_name)):
        registry = get_app().node_registry

        def both_up():
            pids = {n.pid: n for n in registry.list_nodes() if n.alive}
            return victim.pid in pids and survivor.pid in pids and pids

        nodes = wait_for(both_up, 60, "both workers to heartbeat")
        assert nodes[victim.pid].role == nodes[survivor.pid].role == "worker"
        assert nodes[victim.pid].node_id != nodes[survivor.pid].node_id
        assert admin_nodes(client)[victim.pid]["status"] == "alive"

        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        wait_for(
            lambda: admin_nodes(client).get(victim.pid, {}).get("status") == "dead",
            10,
            "the killed worker to show dead on Nodes",
        )
        # Not before the timeout: it beat within the last NODE_HEARTBEAT.
        assert time.monotonic() - killed_at >= NODES_FAST["NODE_TIMEOUT"] - 0.5
        page, status = admin_nodes(client), status_nodes()
        assert status[victim.pid]["status"] == "dead"
        assert page[survivor.pid]["status"] == status[survivor.pid]["status"] == "alive"
        assert {p: r["node_id"] for p, r in page.items()} == {
            p: r["node_id"] for p, r in status.items()
        }
        wait_for(
            lambda: victim.pid not in admin_nodes(client),
            10,
            "the dead worker to drop out",
        )
        assert survivor.pid in status_nodes()
        # A clean stop (SIGTERM drains, stops the app) removes the entry at once.
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=30) == 0
        assert survivor.pid not in {n.pid for n in registry.list_nodes()}
