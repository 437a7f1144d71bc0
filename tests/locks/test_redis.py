"""Redis-backend extras: the watchdog when the server goes away."""

from __future__ import annotations

import logging

import pytest

from mega_cluster.testing import make_app, wait_until
from tests.servers import redis_server

pytestmark = pytest.mark.redis


def test_renewals_failing_until_the_lease_ends_log_the_key_and_lose_the_lock(
    unique_name, caplog
):
    """With the server down the watchdog retries; at the lease's end it gives up,
    logs a warning naming the key and the server error, and the lock is lost."""
    caplog.set_level(logging.WARNING, logger="mega_cluster.locks")
    with redis_server() as server:
        app = make_app(
            unique_name,
            {
                "LOCKS": {
                    "BACKEND": "redis",
                    "OPTIONS": {"URL": f"redis://127.0.0.1:{server.port}/0"},
                }
            },
        )
        try:
            lock = app.lock_manager.acquire("outage", ttl=0.6, auto_extend=True)
            server.stop()
            wait_until(lambda: lock.lost, timeout=5, what="the lock marked lost")

            def lost_warnings():
                return [
                    r.getMessage()
                    for r in caplog.records
                    if r.name == "mega_cluster.locks" and " lost " in r.getMessage()
                ]

            # ``lost`` is set first (the section learns at once), the warning follows
            wait_until(lost_warnings, timeout=5, what="the warning")
            [message] = lost_warnings()
            assert "'outage'" in message
            assert "renewal failed until the lease ended" in message
        finally:
            app.stop()
