"""Broker outages: reconnect with backoff, subscriptions restored, on_gap told.

Each test runs its own server on a free port (tests/servers.py); the shared
servers are never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.pubsub.backends import base
from mega_cluster.testing import make_app
from tests.servers import free_port, nats_server, redis_server

from .helpers import Recorder, wait_for

KINDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("nats", marks=pytest.mark.nats),
]


def _url(kind: str, port: int) -> str:
    return (
        f"redis://127.0.0.1:{port}/0" if kind == "redis" else f"nats://127.0.0.1:{port}"
    )


def _server(kind: str):
    return redis_server() if kind == "redis" else nats_server(jetstream=False)


@contextlib.contextmanager
def _nodes(kind, name, port, *ids):
    apps = [
        make_app(
            name,
            {
                "PUBSUB": {
                    "BACKEND": kind,
                    "OPTIONS": {"URL": _url(kind, port)},
                    "RECONNECT_MAX_DELAY": 0.5,
                }
            },
            node_id=f"{name}-{node_id}",
        )
        for node_id in ids
    ]
    try:
        yield apps
    finally:
        for app in apps:
            app.stop()


def _publish_until_accepted(app, channel, message, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            app.pubsub_manager.publish(channel, message)
            return
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_listener_reconnects_after_restart_and_reports_the_gap(kind, unique_name):
    """After a broker restart the listener reconnects by itself, on_gap fires once,
    the subscription is restored and later messages arrive."""
    with (
        _server(kind) as server,
        _nodes(kind, unique_name, server.port, "a", "b") as (
            a,
            b,
        ),
    ):
        seen, gaps = Recorder("seen"), Recorder("gaps")
        b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
        a.pubsub_manager.publish("news", "before")
        assert seen.wait(1) == ["before"]
        assert gaps.items == []

        server.restart()

        assert gaps.wait(1, timeout=15) == ["gap"]
        _publish_until_accepted(a, "news", "after")
        assert seen.wait_for_item("after", timeout=10)[-1] == "after"
        assert b.pubsub_manager.backend.reconnects == 1


@pytest.mark.parametrize("kind", KINDS)
def test_publish_while_broker_is_down_raises(kind, unique_name):
    """Publishing during an outage raises BackendUnavailable (never a silent drop)."""
    with _server(kind) as server, _nodes(kind, unique_name, server.port, "a") as (a,):
        a.pubsub_manager.publish("news", "fine")
        server.stop()

        def raises() -> bool:
            try:
                a.pubsub_manager.publish("news", "lost")
            except BackendUnavailable:
                return True
            return False

        assert wait_for(raises, timeout=10)


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_broker_at_start(kind, unique_name):
    """Starting against a server that does not answer raises BackendUnavailable."""
    with _nodes(kind, unique_name, free_port(), "a") as (a,):
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            a.pubsub_manager.subscribe("news", print)


@pytest.mark.redis
def test_frozen_redis_is_detected_by_the_ping_watchdog(unique_name):
    """A server that stops answering without closing TCP (SIGSTOP) is noticed by the
    idle PING; after it resumes the listener reconnects and reports the gap."""
    import signal

    with redis_server() as server:
        settings = {
            "PUBSUB": {
                "BACKEND": "redis",
                "OPTIONS": {"URL": _url("redis", server.port), "PING_INTERVAL": 0.3},
                "RECONNECT_MAX_DELAY": 0.5,
            }
        }
        a = make_app(unique_name, settings, node_id=f"{unique_name}-a")
        b = make_app(unique_name, settings, node_id=f"{unique_name}-b")
        try:
            seen, gaps = Recorder("seen"), Recorder("gaps")
            b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
            backend = b.pubsub_manager.backend
            server.proc.send_signal(signal.SIGSTOP)
            try:
                assert wait_for(lambda: not backend.connected, 10)
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert gaps.wait(1, timeout=20) == ["gap"]
            _publish_until_accepted(a, "news", "after")
            assert seen.wait_for_item("after", timeout=10) == ["after"]
        finally:
            a.stop()
            b.stop()


@pytest.mark.redis
def test_channels_layer_reconnects_after_redis_restart(unique_name):
    """The channels backend on channels_redis notices a Redis restart, re-joins its
    groups, reports the gap and receives again."""
    from django.test import override_settings

    with redis_server() as server:
        layers = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [_url("redis", server.port)],
                    "prefix": unique_name,
                },
            }
        }
        settings = {"PUBSUB": {"BACKEND": "channels", "RECONNECT_MAX_DELAY": 0.5}}
        with override_settings(CHANNEL_LAYERS=layers):
            a = make_app(unique_name, settings, node_id=f"{unique_name}-a")
            b = make_app(unique_name, settings, node_id=f"{unique_name}-b")
            try:
                seen, gaps = Recorder("seen"), Recorder("gaps")
                b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
                a.pubsub_manager.publish("news", "before")
                assert seen.wait(1) == ["before"]

                server.restart()

                assert gaps.wait(1, timeout=20) == ["gap"]

                def delivered():
                    try:
                        a.pubsub_manager.publish("news", "after")
                    except BackendUnavailable:
                        return False
                    return wait_for(lambda: "after" in seen.items, 0.5)

                assert wait_for(delivered, 15)
            finally:
                a.stop()
                b.stop()


class _SleepSpy:
    """Stands in for ``asyncio`` in the backend base module: records the delay of
    every ``asyncio.sleep`` there (only the reconnect backoff sleeps in it) and
    sleeps for real."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, delay, *args):
        self.delays.append(delay)
        return await asyncio.sleep(delay, *args)


@pytest.mark.parametrize("kind", KINDS)
def test_reconnect_backoff_grows_exponentially_up_to_the_cap(
    kind, unique_name, monkeypatch, caplog
):
    """While the broker stays down each failed attempt doubles the delay (with
    jitter down to half of it) from RECONNECT_BASE_DELAY up to RECONNECT_MAX_DELAY;
    once it is back the listener reconnects and reports the gap."""
    spy = _SleepSpy()
    monkeypatch.setattr(base, "asyncio", spy)
    cap = 0.8
    nominal = [min(cap, base.RECONNECT_BASE_DELAY * 2**n) for n in range(7)]
    assert nominal[-3:] == [cap] * 3  # the cap is reached within the test
    with _server(kind) as server:
        app = make_app(
            unique_name,
            {
                "PUBSUB": {
                    "BACKEND": kind,
                    "OPTIONS": {"URL": _url(kind, server.port)},
                    "RECONNECT_MAX_DELAY": cap,
                }
            },
            node_id=f"{unique_name}-b",
        )
        try:
            gaps = Recorder("gaps")
            app.pubsub_manager.subscribe("news", print, on_gap=lambda: gaps("gap"))
            backend = app.pubsub_manager.backend
            with caplog.at_level(logging.DEBUG, logger="mega_cluster.pubsub"):
                server.stop()
                assert wait_for(lambda: len(spy.delays) > len(nominal), timeout=15)
                server.start()
                assert gaps.wait(1, timeout=15) == ["gap"]
            assert backend.connected and backend.reconnects == 1
        finally:
            app.stop()
    failed = [
        r.args[1] for r in caplog.records if "reconnect attempt" in r.getMessage()
    ]
    assert failed[: len(nominal)] == list(range(1, len(nominal) + 1))
    for delay, expected in zip(spy.delays, nominal, strict=False):
        assert expected / 2 <= delay <= expected, (spy.delays, nominal)
    assert max(spy.delays) <= cap
