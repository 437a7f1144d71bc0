"""The cluster fixture: nodes with the project's plugins, isolated, stopped after."""

from __future__ import annotations

import threading

import pytest
from django.test import override_settings

from mega_cluster.exceptions import ConfigurationError
from mega_cluster.models import PluginState
from mega_cluster.registry import get_app
from mega_cluster.testing import Cluster
from plugins.data_source.models import Collection
from plugins.data_source.plugin import DataSourcePlugin

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_node_is_a_started_app_with_its_own_plugin_instances(cluster):
    """Every installed plugin is loaded on each node, one instance per node;
    install() ran once for the cluster."""
    a, b = cluster(2)
    assert (a.node_id, b.node_id) == ("node-1", "node-2")
    assert a.started and b.started and a.name == b.name
    assert (
        set(a.plugins)
        == set(b.plugins)
        == {
            "site_notice",
            "auth_policy",
            "data_source",
            "async_tasks",
        }
    )
    for name in a.plugins:
        pa, pb = cluster.plugins(name)
        assert pa is not pb and pa.app is a and pb.app is b
        assert pa.loaded and pb.loaded
    states = PluginState.objects.filter(app_name=a.name)
    assert states.count() == 4 and all(s.installed for s in states)
    assert isinstance(cluster.plugins("data_source")[0], DataSourcePlugin)


def test_the_nodes_see_each_other_in_a_registry_of_their_own(cluster):
    """Heartbeats go to the cluster's memory registry, never to the database."""
    from mega_cluster.models import Node
    from mega_cluster.testing import wait_until

    a, _ = cluster(2)
    wait_until(
        lambda: len(a.node_registry.list_nodes()) == 2, 5, "both first heartbeats"
    )
    assert [n.node_id for n in a.node_registry.list_nodes()] == ["node-1", "node-2"]
    assert not Node.objects.exists()


def test_plugin_state_of_one_node_never_leaks_to_another(cluster):
    """A node's in-memory state changes only through messages: nothing is
    shared between plugin instances."""
    _a, _b = cluster(2)
    pa, pb = cluster.plugins("data_source")
    Collection.objects.create(name="direct")
    pa.reload_all()
    assert pa.get_collection("direct") and pb.get_collection("direct") is None
    cluster.deliver()
    assert pb.get_collection("direct") is None  # nobody sent anything
    assert cluster.published() == []


def test_nodes_ignore_the_project_backends_and_leave_its_app_alone(cluster):
    """With the project on unreachable Redis, the kit's nodes still run on the
    embedded backends under an app name of their own; the project's app is
    neither started nor reached by their messages."""
    unreachable = {"BACKEND": "redis", "OPTIONS": {"URL": "redis://127.0.0.1:1/0"}}
    with override_settings(
        MEGA_CLUSTER={
            "APP_NAME": "project",
            "PUBSUB": unreachable,
            "LOCKS": unreachable,
        }
    ):
        from mega_cluster import conf

        conf.clear_cache()
        try:
            a, _b = cluster(2)
            pa, pb = cluster.plugins("data_source")
            pa.create_collection("orders")
            cluster.deliver()
            assert pb.get_collection("orders")
            assert a.name != "project"
            assert a.settings.pubsub.backend.alias == "memory"
            assert a.settings.locks.backend.alias == "local"
        finally:
            conf.clear_cache()
    assert not get_app().started


def test_two_clusters_in_one_test_do_not_meet(cluster):
    """Another cluster (its own app name) shares no message, lock or event."""
    a, _b = cluster(2)
    with Cluster() as other:
        (c,) = other(1)
        assert c.name != a.name
        with a.lock_manager.lock("shared-key"):
            assert c.lock_manager.try_acquire("shared-key") is not None
        cluster.plugins("data_source")[0].create_collection("orders")
        cluster.deliver()
        other.deliver()
        assert other.published() == [] and other.delivered(c) == []
        a.event_queue.publish("jobs", {"n": 1})
        assert other.events.pending() == []
    assert not c.started  # stopped at the end of the block


def test_settings_and_plugins_can_be_chosen(cluster):
    """configure(plugins=...) loads only those plugins; settings= and
    node_settings= reach the nodes' parsed settings."""
    cluster.configure(plugins=["data_source"], settings={"LOCKS": {"TTL": 7}})
    a, b = cluster(
        ["web", "worker"], node_settings={"web": {"EVENT_QUEUE": {"CONSUME": False}}}
    )
    assert list(a.plugins) == ["data_source"] == list(b.plugins)
    assert a.settings.locks["TTL"] == 7 == b.lock_manager.default_ttl
    assert not a.event_queue.consuming and b.event_queue.consuming
    with pytest.raises(RuntimeError, match="before the first node"):
        cluster.configure(plugins=[])
    with pytest.raises(ValueError, match="already has a node 'web'"):
        cluster(["web"])
    with pytest.raises(KeyError, match=r"No node 'db'.*web, worker"):
        cluster.node("db")
    with pytest.raises(KeyError, match=r"No plugin 'nope'.*data_source"):
        cluster.plugins("nope")


def test_bad_node_settings_are_configuration_errors(cluster):
    with pytest.raises(ConfigurationError, match="LOCKS TTL"):
        cluster(1, settings={"LOCKS": {"TTL": "long"}})
    with pytest.raises(ValueError, match="node_settings names \\['x'\\]"):
        cluster(1, node_settings={"x": {}})
    with pytest.raises(ValueError, match="at least 1"):
        cluster(0)


def test_every_thread_the_cluster_started_is_stopped(transactional_db):
    """Nodes that delivered messages, ran events and held renewed locks leave no
    thread behind once the cluster stops."""
    before = set(threading.enumerate())
    kit = Cluster()
    try:
        _a, _b = kit(2)
        pa, _ = kit.plugins("data_source")
        pa.create_collection("orders")  # a lock renewed by the watchdog
        kit.deliver()
        kit.plugins("async_tasks")[0].start_task("count", {"steps": 1, "delay": 0})
        assert [t.outcome for t in kit.run_events()] == ["succeeded"]
        assert set(threading.enumerate()) - before  # dispatchers, heartbeats...
    finally:
        kit.stop()
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == []


def test_a_plugin_disabled_on_one_node_is_disabled_on_every_node(cluster):
    """Enable and disable travel as sync messages like any other."""
    a, b = cluster(2)
    a.disable_plugin("async_tasks")
    assert not a.plugins["async_tasks"].enabled
    assert b.plugins["async_tasks"].enabled  # not delivered yet
    cluster.deliver()
    assert not b.plugins["async_tasks"].enabled
    cluster.assert_published(a, "~plugins", {"plugin": "async_tasks", "enabled": False})
    a.enable_plugin("async_tasks")
    cluster.deliver()
    assert cluster.assert_same(lambda node: node.plugins["async_tasks"].loaded)


def test_with_several_project_apps_the_cluster_asks_which_one(cluster):
    from mega_cluster import conf

    apps = {"APPS": {"main": {"PLUGINS": ["site_notice"]}, "admin": {}}}
    with override_settings(MEGA_CLUSTER=apps):
        conf.clear_cache()
        try:
            with pytest.raises(ConfigurationError, match=r"configure\(app=name\)"):
                cluster(1)
            cluster.configure(app="main")
            (node,) = cluster(["only"])
            assert list(node.plugins) == ["site_notice"]
        finally:
            conf.clear_cache()
