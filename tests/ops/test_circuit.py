"""Degrade mode: a backend's circuit opens after consecutive connection failures,
calls then fail fast with ``CircuitOpen`` without touching the server, and a
background probe closes it once the server answers again. Real servers, each the
test's own instance (tests/servers.py)."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from mega_cluster import BackendUnavailable, CircuitOpen, metrics
from mega_cluster.circuit import Circuit, open_circuits
from mega_cluster.testing import make_app, wait_until

from ..servers import redis_server

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"CIRCUIT_FAILURES": 2, "CIRCUIT_PROBE_EVERY": 0.1, "HEALTH_TIMEOUT": 1.0}


def _fail_until_open(circuit: Circuit, call) -> list[BaseException]:
    errors = []
    for _ in range(circuit.threshold):
        with pytest.raises(BackendUnavailable) as info:
            call()
        errors.append(info.value)
    return errors


def test_redis_lock_circuit_opens_fails_fast_and_closes(unique_name):
    """Frozen Redis: each of the first CIRCUIT_FAILURES acquires waits for its
    socket timeout and fails; then the circuit is open and the next call raises
    CircuitOpen without sending anything (a frozen server could not have answered
    a sent command with anything but a timeout). Thawed, the background probe
    closes the circuit and locks work again."""
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        app = make_app(
            unique_name,
            {
                **FAST,
                "LOCKS": {
                    "BACKEND": "redis",
                    "OPTIONS": {"URL": url, "SOCKET_TIMEOUT": 0.5},
                },
            },
        )
        try:
            locks = app.lock_manager
            locks.acquire("warm", ttl=5).release()
            circuit = locks.backend.circuit
            assert circuit.state == "closed"
            server.freeze()
            try:
                errors = _fail_until_open(
                    circuit, lambda: locks.try_acquire("k", ttl=5)
                )
                assert not any(isinstance(e, CircuitOpen) for e in errors)
                assert circuit.state == "open"
                with pytest.raises(CircuitOpen, match="fail fast"):
                    locks.try_acquire("k", ttl=5)
                with pytest.raises(CircuitOpen):
                    locks.list_locks()
                assert circuit in open_circuits(app.name)
            finally:
                server.thaw()
            wait_until(lambda: circuit.state == "closed", what="the probe to close it")
            # (not "k": the timed-out acquires ran once the server was thawed)
            lock = locks.try_acquire("after", ttl=5)
            assert lock is not None
            lock.release()
            assert circuit.opened_count == 1
        finally:
            app.stop()


def test_redis_cache_store_circuit_opens_and_closes_after_a_restart(unique_name):
    """A cache store's circuit: the server killed, reads fail (connection refused)
    until the circuit opens and they fail fast; restarted on the same port, the
    probe closes it and the cache reads and writes again."""
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        caches_ = {
            **settings.CACHES,
            "circuit_redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
            },
        }
        with override_settings(CACHES=caches_):
            app = make_app(
                unique_name, {**FAST, "CACHE": {"DEFAULT_STORE": "circuit_redis"}}
            )
            try:
                cache = app.cache
                cache.set("a", 1)
                circuit = app.cache_manager.store("circuit_redis").circuit
                server.stop()
                _fail_until_open(circuit, lambda: cache.get("a"))
                with pytest.raises(CircuitOpen):
                    cache.set("a", 2)
                server.start()
                wait_until(lambda: circuit.state == "closed", what="the probe")
                cache.set("a", 3)
                assert cache.get("a") == 3
            finally:
                app.stop()


def test_open_circuits_show_in_health_metrics_and_cluster_status(client):
    """While the lock backend's circuit is open, the health view marks it
    ``"circuit": "open"``, the metrics export mega_cluster_circuit_open 1 and
    cluster_status lists it."""
    from mega_cluster.testing import cluster_settings

    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        name = f"t{settings.RUN_ID}ci"[:50]
        value = {
            "APP_NAME": name,
            **FAST,
            "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url}},
        }
        with cluster_settings(value):
            from mega_cluster import get_app

            app = get_app()
            server.stop()
            _fail_until_open(
                app.lock_manager.backend.circuit,
                lambda: app.lock_manager.try_acquire("k"),
            )
            body = client.get(reverse("mega_cluster:health")).json()
            assert body["apps"][name]["locks"]["circuit"] == "open"
            assert body["apps"][name]["locks"]["ok"] is False
            out = io.StringIO()
            with pytest.raises(Exception):  # noqa: B017 - the lock list cannot be read
                call_command("cluster_status", stdout=out)
            assert "circuits open: locks" in out.getvalue()
            out = io.StringIO()
            with pytest.raises(Exception):  # noqa: B017
                call_command("cluster_status", "--json", stdout=out)
            (snap,) = json.loads(out.getvalue())["apps"]
            (row,) = [r for r in snap["backends"] if r["check"] == "locks"]
            assert row["circuit"] == "open"
            if metrics.ENABLED:
                text = metrics.render()[0].decode()
                assert (
                    f'mega_cluster_circuit_open{{app="{name}",circuit="locks"}} 1.0'
                    in text
                )


def test_half_open_without_a_probe_lets_one_trial_through():
    """A circuit without a ping is half-open after CIRCUIT_PROBE_EVERY: one call
    goes through as the trial while the others still fail fast; the trial's
    success closes it."""
    circuit = Circuit("t", "x", failures=1, probe_every=0.05, probe=None)
    with pytest.raises(BackendUnavailable):
        circuit.call(_raise, BackendUnavailable("down"))
    assert circuit.state == "open"
    with pytest.raises(CircuitOpen):
        circuit.call(lambda: 1)
    wait_until(lambda: time.monotonic() - circuit.opened_at >= 0.05, what="due")
    entered, release = threading.Event(), threading.Event()

    def trial() -> int:
        entered.set()
        release.wait(5)
        return 7

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(circuit.call(trial)))
    thread.start()
    try:
        assert entered.wait(5)
        with pytest.raises(CircuitOpen):
            circuit.call(lambda: 1)  # one trial at a time
    finally:
        release.set()
        thread.join(5)
    assert result == [7] and circuit.state == "closed"
    assert circuit.call(lambda: 2) == 2


def _raise(exc: BaseException) -> None:
    raise exc


def test_a_forked_child_starts_with_every_circuit_closed():
    """The parent's open circuit (and its probe thread) is not inherited: the
    child starts closed, the parent stays open."""
    circuit = Circuit("t", "fork", failures=1, probe=None)
    with pytest.raises(BackendUnavailable):
        circuit.call(_raise, BackendUnavailable("down"))
    assert circuit.is_open
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if circuit.state == "closed" and circuit.failures == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert circuit.is_open
