"""The node registry on the database and on Redis, in one process."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.conf import settings

from mega_cluster.models import Node
from mega_cluster.nodes import NodeRegistry
from mega_cluster.testing import make_app
from tests.databases import ON_POSTGRES
from tests.factories import NodeFactory

from .conftest import FAST_NODES, redis_settings, wait_until

STORES = [
    pytest.param(
        "database", id="database", marks=pytest.mark.django_db(transaction=True)
    ),
    # the database through PgBouncer in transaction mode (the event queue's alias)
    pytest.param("database-pgbouncer", id="database-pgbouncer", marks=ON_POSTGRES),
    pytest.param(
        "redis",
        id="redis",
        marks=[pytest.mark.redis, pytest.mark.django_db(transaction=True)],
    ),
]


def settings_for(store: str) -> dict:
    base: dict = {}
    if store == "redis":
        base = redis_settings(settings.REDIS_URL, settings.KEY_PREFIX)
    elif store == "database-pgbouncer":
        options = {"DATABASE": "pgbouncer", "LISTEN_DATABASE": "postgres"}
        base = {"EVENT_QUEUE": {"BACKEND": "database", "OPTIONS": options}}
    return {**base, **FAST_NODES}


@pytest.fixture(params=STORES)
def make(request, unique_name):
    store = request.param
    if store == "database-pgbouncer":
        request.getfixturevalue("pgbouncer_alias")
    apps = []

    def build(node_id=None):
        app = make_app(unique_name, settings_for(store), node_id=node_id)
        apps.append(app)
        return app

    build.store = store
    yield build
    for app in reversed(apps):
        app.stop()


def test_store_follows_the_backends(make):
    """Redis locks put the heartbeats in Redis; without Redis they go to the database."""
    app = make()
    assert app.node_registry.store.name == make.store.split("-")[0]


def test_started_app_heartbeats_and_stop_removes_it(make):
    """app.start() makes the node visible with its identity; stop() removes it."""
    web = make(node_id="web-1")
    observer = make(node_id="observer")
    web.start()
    node = wait_until(lambda: observer.node_registry.get("web-1"), what="heartbeat")
    assert node.alive and node.role == "web" and node.app == web.name
    assert node.pid == os.getpid()
    assert node.host and node.version
    assert node.started_at <= time.time()
    web.stop()
    assert observer.node_registry.get("web-1") is None


def test_role_channels_and_consumers_are_published(make):
    """A worker's role, pub/sub channels and queue consumers are in its record."""
    worker = make(node_id="worker-1")
    worker.node_registry.role = "worker"
    worker.event_queue.subscribe("orders", process=lambda p, ctx: None, concurrency=3)
    worker.pubsub_manager.subscribe("news", lambda m: None)
    worker.start()
    node = wait_until(
        lambda: (n := worker.node_registry.get("worker-1")) and n.consumers and n,
        what="worker record",
    )
    assert node.role == "worker"
    assert node.consumers == {"orders": 3}
    assert any(c.endswith("news") for c in node.channels)


def test_silent_node_is_dead_then_dropped(make):
    """A node that stops beating is listed dead after NODE_TIMEOUT, gone after 2x."""
    observer = make(node_id="observer")
    registry = observer.node_registry
    record = make(node_id="ghost").node_registry.describe()
    registry.store.put(record, drop_after=registry.drop_after)
    assert registry.get("ghost").alive
    wait_until(lambda: not registry.get("ghost").alive, timeout=5, what="dead")
    assert [n.node_id for n in registry.list_nodes(include_dead=False)] == []
    wait_until(lambda: registry.get("ghost") is None, timeout=5, what="dropped")


def test_role_is_validated(make):
    """Only web and worker are roles."""
    with pytest.raises(ValueError, match="role"):
        make().node_registry.role = "cron"


@pytest.mark.django_db(transaction=True)
def test_database_rows_are_per_app(unique_name):
    """Two apps on one database see only their own nodes."""
    one = make_app(unique_name, FAST_NODES, node_id="n1")
    two = make_app(unique_name + "b", FAST_NODES, node_id="n2")
    try:
        one.node_registry.beat()
        two.node_registry.beat()
        assert [n.node_id for n in one.node_registry.list_nodes()] == ["n1"]
        assert [n.node_id for n in two.node_registry.list_nodes()] == ["n2"]
        assert Node.objects.filter(app_name=unique_name).count() == 1
    finally:
        one.stop()
        two.stop()


@pytest.mark.django_db(transaction=True)
def test_database_rows_live_dead_and_dropped_by_heartbeat_age(unique_name):
    """A row is alive within NODE_TIMEOUT of its last beat, listed dead after it,
    and deleted when read after 2 x NODE_TIMEOUT."""
    now = time.time()
    NodeFactory(app_name=unique_name, node_id="fresh", heartbeat_at=now)
    NodeFactory(app_name=unique_name, node_id="silent", heartbeat_at=now - 0.9)
    NodeFactory(app_name=unique_name, node_id="gone", heartbeat_at=now - 5)
    app = make_app(unique_name, FAST_NODES, node_id="observer")
    try:
        listed = {n.node_id: n.alive for n in app.node_registry.list_nodes()}
        assert listed == {"fresh": True, "silent": False}
        assert not Node.objects.filter(app_name=unique_name, node_id="gone").exists()
    finally:
        app.stop()


def test_registry_is_a_component():
    """NodeRegistry is reachable as the node_registry component."""
    from mega_cluster.registry import COMPONENTS, START_ORDER

    assert COMPONENTS["node_registry"] == "mega_cluster.nodes.NodeRegistry"
    assert START_ORDER[-1] == "node_registry"
    assert NodeRegistry.__name__ == "NodeRegistry"


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_forked_child_beats_as_its_own_node(unique_name):
    """A child forked from a started node (gunicorn --preload) gets a new node id
    and its own heartbeat thread once it starts; the parent keeps beating."""
    from mega_cluster.registry import get_app
    from mega_cluster.testing import cluster_settings

    value = {
        "APP_NAME": unique_name,
        **redis_settings(settings.REDIS_URL, settings.KEY_PREFIX),
        **FAST_NODES,
    }
    with cluster_settings(value):
        app = get_app()
        app.start()
        parent_id = app.node_id
        wait_until(lambda: app.node_registry.get(parent_id), what="parent beat")
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                signal.alarm(20)
                child_app = get_app()
                child_app.start()  # the fork dropped the parent's components
                child_id = child_app.node_id
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    node = child_app.node_registry.get(child_id)
                    if node is not None and node.pid == os.getpid():
                        code = 0 if child_id != parent_id else 2
                        break
                    time.sleep(0.05)
                child_app.stop()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        parent = app.node_registry.get(parent_id)
        assert parent is not None and parent.alive and parent.pid == os.getpid()
        assert [n.node_id for n in app.node_registry.list_nodes()] == [parent_id]
