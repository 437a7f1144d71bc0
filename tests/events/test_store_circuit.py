"""Degrade mode of the event store: a database outage (PostgreSQL cut off through a
TCP proxy, never the shared server stopped) is ``BackendUnavailable``, opens the
store's circuit after consecutive failures, shows in the health report and the
metrics, and a probe closes it again; errors that are the caller's (a dedupe key
taken, a value the column cannot hold) count for nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import DatabaseError, DataError, connections, transaction

from mega_cluster import BackendUnavailable, CircuitOpen, health, metrics
from mega_cluster.circuit import open_circuits
from mega_cluster.events.backends.base import NewEvent
from mega_cluster.testing import make_app

from .conftest import FAST, celery_options, wait_until

#: Two failures open a circuit; its probe runs every 0.2 s.
CIRCUIT = {"CIRCUIT_FAILURES": 2, "CIRCUIT_PROBE_EVERY": 0.2, "HEALTH_TIMEOUT": 1.0}


def _app(unique_name, backend, database):
    options = (
        celery_options(database) if backend == "celery" else {"DATABASE": database}
    )
    return make_app(
        unique_name,
        {**CIRCUIT, "EVENT_QUEUE": {"BACKEND": backend, **FAST, "OPTIONS": options}},
    )


def _gauge(app_name: str, circuit: str) -> str:
    return f'mega_cluster_circuit_open{{app="{app_name}",circuit="{circuit}"}}'


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_database_store_outage_opens_the_circuit_and_a_probe_closes_it(
    unique_name, proxied_store
):
    app = _app(unique_name, "database", "proxied")
    queue = app.event_queue
    circuit = queue.backend.circuit
    seen: list[int] = []
    try:
        queue.subscribe("jobs", process=lambda payload, ctx: seen.append(payload))
        # The caller's errors are not an outage: a taken dedupe key (an
        # IntegrityError inside), a channel the column cannot hold (DataError).
        first = queue.publish("held", 1, dedupe_key="k", delay=60)
        for _ in range(3):
            assert queue.publish("held", 1, dedupe_key="k", delay=60) == first
        too_long = NewEvent(
            id=uuid.uuid4().hex,
            channel="x" * 300,
            payload="1",
            max_retries=0,
            timeout=None,
            available_at=time.time(),
            dedupe_key=None,
        )
        for _ in range(3):
            with pytest.raises(DataError):
                queue.backend.enqueue(too_long)
        assert (circuit.failures, circuit.is_open) == (0, False)

        app.start()
        queue.publish("jobs", 0)
        wait_until(lambda: seen == [0], what="the first event")
        proxied_store.cut()
        # The consumer's claims alone open it: a worker with no publisher knows.
        wait_until(lambda: circuit.is_open, timeout=20, what="the circuit to open")
        with pytest.raises(CircuitOpen) as info:
            queue.publish("jobs", 1)
        assert isinstance(info.value.__cause__, DatabaseError)  # the driver's
        with pytest.raises(CircuitOpen):
            queue.stats("jobs")
        _ok, _dbs, apps = health.report([app])
        entry = apps[app.name]["event_queue"]
        assert (entry["ok"], entry["circuit"]) == (False, "open")
        if metrics.ENABLED:
            assert (
                f"{_gauge(app.name, 'event_queue')} 1.0" in metrics.render()[0].decode()
            )

        proxied_store.restore()
        wait_until(lambda: not circuit.is_open, timeout=20, what="the probe")
        queue.publish("jobs", 2)
        wait_until(lambda: seen == [0, 2], timeout=30, what="an event after it")
        wait_until(  # the handler returned before its outcome was written
            lambda: queue.stats("jobs")["jobs"]["succeeded"] == 2,
            timeout=15,
            what="both outcomes",
        )
    finally:
        proxied_store.restore()
        app.stop()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_store_outage_inside_the_callers_atomic_block(unique_name, proxied_store):
    """Inside the caller's ``atomic`` block the outage raises at the call too
    (``BackendUnavailable``, counted), and once the circuit is open a publish is
    refused at the call instead of being lost after the commit."""
    app = _app(unique_name, "database", "proxied")
    queue = app.event_queue
    raised: list[BaseException] = []

    def call(fn, *args):
        try:
            fn(*args)
        except Exception as exc:
            raised.append(exc)

    try:
        with pytest.raises(DatabaseError):  # the commit cannot reach the server
            with transaction.atomic(using="proxied"):
                assert queue.publish("jobs", 0)  # deferred to the commit
                proxied_store.cut()
                call(queue.stats, "jobs")
                call(queue.stats, "jobs")
                call(queue.publish, "jobs", 1)
        assert [type(exc) for exc in raised] == [
            BackendUnavailable,
            BackendUnavailable,
            CircuitOpen,
        ]
    finally:
        proxied_store.restore()
        connections["proxied"].close()
        app.stop()


@pytest.mark.celery
@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_celery_store_outage_opens_the_store_circuit(unique_name, proxied_store):
    """The Celery backend's store has a circuit of its own: calls that need the
    store fail fast while it is open, the health report marks the event queue's
    circuit open naming the store's, the consumer keeps every message through
    the outage and runs each event once after it."""
    app = _app(unique_name, "celery", "proxied")
    queue = app.event_queue
    store = queue.backend.store.circuit
    seen: list[int] = []
    try:
        queue.subscribe("jobs", process=lambda payload, ctx: seen.append(payload))
        app.start()
        queue.publish("jobs", 0)
        wait_until(lambda: seen == [0], what="the first event")
        proxied_store.cut()
        for i in range(1, 4):
            queue.publish("jobs", i)  # the messages carry the events
        wait_until(lambda: store.is_open, timeout=20, what="the store's circuit")
        with pytest.raises(CircuitOpen):
            queue.stats("jobs")
        with pytest.raises(CircuitOpen):  # a dedupe key needs its row first
            queue.publish("jobs", 9, dedupe_key="k")
        _ok, _dbs, apps = health.report([app])
        entry = apps[app.name]["event_queue"]
        assert entry["ok"] is False
        assert entry["circuit"] == "open"
        assert entry["open_circuits"] == ["event_queue:store"]
        assert "event_queue:store" in [c.name for c in open_circuits(app.name)]
        if metrics.ENABLED:
            text = metrics.render()[0].decode()
            assert f"{_gauge(app.name, 'event_queue:store')} 1.0" in text

        proxied_store.restore()
        wait_until(lambda: not store.is_open, timeout=20, what="the probe")
        wait_until(lambda: sorted(seen) == [0, 1, 2, 3], timeout=30)
        wait_until(
            lambda: queue.stats("jobs")["jobs"]["succeeded"] == 4,
            timeout=15,
            what="the outcomes",
        )
        assert sorted(seen) == [0, 1, 2, 3]  # none ran twice
    finally:
        proxied_store.restore()
        app.stop()
