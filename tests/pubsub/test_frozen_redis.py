"""A publish to a Redis that stopped answering (the test's own ``redis-server``
frozen with SIGSTOP: the kernel still accepts connections, nothing replies) fails
with ``BackendUnavailable`` after the backend's ``SOCKET_TIMEOUT`` instead of
hanging: sync and async pub/sub publishes, on a fresh and on an idle connection,
and an event published on a Celery queue whose broker is that Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from mega_cluster import BackendUnavailable
from mega_cluster.testing import make_app, wait_until

from ..servers import redis_server

#: Far above the socket timeouts below, far below "hangs": proves the bound
#: without timing the call closely.
BOUND = 25.0
#: The pub/sub SOCKET_TIMEOUT under test: above redis-py 8's own default (5 s;
#: older redis-py has none and waits forever), so a publish that fails no sooner
#: than this shows the setting is what bounds it.
SOCKET_TIMEOUT = 7.0


def _outcome(call: Callable[[], Any]) -> BaseException | None:
    """What ``call()`` raised (None: it returned), waited for at most BOUND."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            result.append(exc)
        else:
            result.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), f"the call still hangs after {BOUND}s"
    return result[0]


@pytest.mark.django_db(transaction=True)
def test_pubsub_publish_to_a_frozen_redis_fails_within_its_socket_timeout(
    unique_name,
):
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        app = make_app(
            unique_name,
            {
                "CIRCUIT_FAILURES": 0,  # every publish reaches the socket
                "PUBSUB": {
                    "BACKEND": "redis",
                    "OPTIONS": {"URL": url, "SOCKET_TIMEOUT": SOCKET_TIMEOUT},
                },
            },
        )
        pubsub = app.pubsub_manager
        try:
            app.start()
            wait_until(lambda: pubsub.backend.connected, what="the listener")
            pubsub.publish("news", 1)  # the publisher's connection, now idle
            asyncio.run(pubsub.apublish("news", 2))
            server.freeze()
            started = time.monotonic()
            error = _outcome(lambda: pubsub.publish("news", 3))
            assert isinstance(error, BackendUnavailable), error
            # a lower bound only (load makes calls slower, never faster)
            assert time.monotonic() - started >= SOCKET_TIMEOUT - 0.5
            error = _outcome(lambda: asyncio.run(pubsub.apublish("news", 4)))
            assert isinstance(error, BackendUnavailable), error
        finally:
            server.thaw()
            app.stop()


@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_event_publish_to_a_frozen_redis_broker_fails_in_bounded_time(
    unique_name, monkeypatch
):
    from mega_cluster.events.backends.celery import broker

    # Our default for a Redis broker (kombu's is none: wait forever), shortened.
    monkeypatch.setattr(broker, "REDIS_SOCKET_TIMEOUT", 1.0)
    with redis_server() as server:
        app = make_app(
            unique_name,
            {
                "CIRCUIT_FAILURES": 0,
                "EVENT_QUEUE": {
                    "BACKEND": "celery",
                    "OPTIONS": {
                        "BROKER_URL": f"redis://127.0.0.1:{server.port}/0",
                        "DATABASE": "postgres",
                    },
                },
            },
        )
        queue = app.event_queue
        try:
            assert queue.publish("jobs", 1)  # connects
            server.freeze()
            error = _outcome(lambda: queue.publish("jobs", 2))
            assert isinstance(error, BackendUnavailable), error
        finally:
            server.thaw()
            app.stop()


@pytest.mark.parametrize("value", [0, -1, float("nan"), "5", True, 10**9])
def test_a_bad_socket_timeout_is_a_configuration_error(unique_name, value):
    from mega_cluster.exceptions import ConfigurationError

    app = make_app(
        unique_name,
        {
            "PUBSUB": {
                "BACKEND": "redis",
                "OPTIONS": {"URL": "redis://127.0.0.1:6379/0", "SOCKET_TIMEOUT": value},
            }
        },
    )
    with pytest.raises(ConfigurationError, match="SOCKET_TIMEOUT"):
        app.pubsub_manager  # noqa: B018 - builds the backend
