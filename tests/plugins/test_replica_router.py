"""A database router that sends reads to a replica never serves a decision: the
plugins' state is read where it is written, and so are the database lock
backend's rows (it names its alias on every statement)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from django.test import override_settings

from mega_cluster.models import PluginState
from mega_cluster.plugins.states import load_states
from mega_cluster.testing import make_app
from tests.databases import ON_POSTGRES

pytestmark = ON_POSTGRES


class StaleReplicaRouter:
    """Reads of mega_cluster's tables go to ``postgres`` (a 'replica' holding stale
    copies), writes to ``default``."""

    def db_for_read(self, model, **hints):  # type: ignore[no-untyped-def]
        return "postgres" if model._meta.app_label == "mega_cluster" else None

    def db_for_write(self, model, **hints):  # type: ignore[no-untyped-def]
        return "default" if model._meta.app_label == "mega_cluster" else None


ROUTED = override_settings(DATABASE_ROUTERS=[StaleReplicaRouter()])


def test_plugin_states_are_read_from_the_write_database(unique_name):
    PluginState.objects.using("default").create(
        app_name=unique_name, name="p", version="2", enabled=False, installed=True
    )
    PluginState.objects.using("postgres").create(  # the stale copy
        app_name=unique_name, name="p", version="1", enabled=True, installed=False
    )
    app = SimpleNamespace(name=unique_name, plugins={"p": SimpleNamespace(version="2")})
    with ROUTED:
        state = load_states(app)["p"]  # type: ignore[arg-type]
    assert (state.enabled, state.installed, state.version) == (False, True, "2")


def test_database_locks_decide_on_their_own_alias_whatever_the_router(unique_name):
    locks = {"BACKEND": "database", "OPTIONS": {"DATABASE": "default"}}
    with ROUTED:
        a = make_app(unique_name, {"LOCKS": locks})
        b = make_app(unique_name, {"LOCKS": locks})
        try:
            held = a.lock_manager.acquire("k", ttl=30)
            assert b.lock_manager.try_acquire("k") is None
            assert [info.key for info in b.lock_manager.list_locks()] == ["k"]
            held.release()
        finally:
            a.stop()
            b.stop()


def test_the_database_node_registry_reads_its_own_alias_whatever_the_router(
    unique_name,
):
    from mega_cluster.models import Node
    from mega_cluster.nodes.stores import DatabaseNodeStore

    app = make_app(unique_name)
    store = DatabaseNodeStore(app, {"DATABASE": "default"})
    record = {
        "node_id": "n1",
        "host": "h",
        "pid": 1,
        "role": "web",
        "version": "1",
        "channels": [],
        "consumers": 0,
        "started_at": time.time(),
        "heartbeat_at": time.time(),
    }
    try:
        with ROUTED:
            store.put(record, drop_after=30)
            assert [r["node_id"] for r in store.all(drop_after=30)] == ["n1"]
        assert not Node.objects.using("postgres").filter(app_name=unique_name).exists()
    finally:
        store.remove("n1")
        app.stop()
