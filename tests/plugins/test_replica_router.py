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


def _stale(app_name: str, **fields):  # type: ignore[no-untyped-def]
    """A stale copy of an event on the 'replica'."""
    from mega_cluster.models import QueuedEvent

    row = {
        "app_name": app_name,
        "channel": "jobs",
        "payload": '"stale"',
        "status": "pending",
        "available_at": time.time() - 60,
        **fields,
    }
    return QueuedEvent.objects.using("postgres").create(**row)


def test_the_event_queue_decides_on_its_own_alias_whatever_the_router(unique_name):
    """Claims, leases, redelivery, dedupe, dead letters and the statistics the
    admin and the health view show are read where the events are written: the
    'replica' holds a stale copy of each event (pending and due, another dedupe
    key's holder, a big tally) and none of them shows."""
    from mega_cluster.events.backends.celery.store import CeleryStore
    from mega_cluster.models import EventTally
    from mega_cluster.nodes.status import queue_rows

    queue_section = {"BACKEND": "database", "OPTIONS": {"DATABASE": "default"}}
    with ROUTED:
        a = make_app(unique_name, {"EVENT_QUEUE": queue_section})
        b = make_app(unique_name, {"EVENT_QUEUE": queue_section})
        try:
            running = a.event_queue.publish("jobs", "running")
            [claim] = a.event_queue.backend.claim("jobs", 10, lease=30)
            assert claim.id == running
            dead = a.event_queue.publish("jobs", "dead")
            [doomed] = a.event_queue.backend.claim("jobs", 10, lease=30)
            a.event_queue.backend.bury(doomed, "boom")
            deduped = a.event_queue.publish("jobs", "later", delay=60, dedupe_key="k")
            for event_id in (running, dead, deduped):
                _stale(unique_name, id=event_id)
            _stale(unique_name, id="x" * 32, dedupe_key="k", available_at=1e12)
            EventTally.objects.using("postgres").create(
                app_name=unique_name, channel="jobs", succeeded=1000, failed=1000
            )

            # a live claim is not handed out again; the dedupe key has one holder
            assert b.event_queue.backend.claim("jobs", 10, lease=30) == []
            assert b.event_queue.publish("jobs", "again", dedupe_key="k") == deduped
            # what the admin and health show
            assert b.event_queue.stats()["jobs"] == {
                "pending": 1,
                "running": 1,
                "succeeded": 0,
                "failed": 1,
                "dead": 1,
            }
            [row] = queue_rows(b)
            assert row["oldest_pending_age"] is None  # the pending one is not due
            letters = b.event_queue.dead_letters()
            assert [(d.id, d.error) for d in letters] == [(dead, "boom")]
            listed = {e.id: e.status for e in b.event_queue.events()}
            assert listed == {running: "running", dead: "dead", deduped: "pending"}
            # the Celery backend's store: nothing overdue, the dead letter known
            store = CeleryStore(b, {"DATABASE": "default"})
            assert store.lost("jobs", older_than=1) == []
            assert store.dead_channel(dead) == "jobs"
            assert isinstance(store.claim_one(running, lease=30), float)  # live
            # a retried dead letter and a lapsed lease are taken again (the
            # replica says one succeeded long ago)
            b.event_queue.retry_dead(dead)
            [again] = b.event_queue.backend.claim("jobs", 10, lease=30)
            assert again.id == dead and again.attempt == 1
            lapsing = a.event_queue.publish("more", "lapsing")
            _stale(unique_name, id="y" * 32, channel="more")
            _stale(unique_name, id=lapsing, channel="more", status="succeeded")
            assert [e.id for e in a.event_queue.backend.claim("more", 10, lease=0.2)]
            time.sleep(0.5)
            [lost] = b.event_queue.backend.claim("more", 10, lease=30)
            assert (lost.id, lost.lost, lost.attempt) == (lapsing, True, 2)
        finally:
            a.stop()
            b.stop()
