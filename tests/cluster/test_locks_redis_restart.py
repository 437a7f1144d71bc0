"""A Redis restart under the lock manager: errors while down, no double grant after."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from mega_cluster.exceptions import BackendUnavailable, LockLost
from mega_cluster.testing import make_app
from tests.cluster.test_locks import Lines, finish
from tests.servers import redis_server

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_redis_restart_fails_loudly_then_grants_once(procs, unique_name):
    """While the (private) server is down every call raises BackendUnavailable and
    the renewing holder learns its lease is lost; after the restart 4 processes
    race for the key, exactly one wins, with a fence above the lost holder's."""
    with redis_server() as server:
        locks = {
            "BACKEND": "redis",
            "OPTIONS": {"URL": f"redis://127.0.0.1:{server.port}/0"},
        }
        app = make_app(unique_name, {"LOCKS": locks})
        manager = app.lock_manager
        try:
            with pytest.raises(LockLost):  # raised when the block exits
                with manager.lock("race", ttl=0.6) as held:
                    server.stop()
                    for call in (
                        lambda: manager.try_acquire("other"),
                        lambda: manager.acquire("other", wait=0.5),
                        manager.list_locks,
                    ):
                        with pytest.raises(BackendUnavailable) as info:
                            call()
                        assert isinstance(info.value.__cause__, redis.RedisError)
                    # renewals fail until the lease's end, then it is lost
                    assert wait_until(lambda: held.lost, timeout=5)
                    server.start()

            go = Path(settings.RUN_DIR) / f"{unique_name}.go"
            workers = [
                Lines(
                    procs.spawn(
                        [
                            "tests/cluster/locks_worker.py",
                            "race",
                            unique_name,
                            json.dumps(locks),
                            str(go),
                        ]
                    )
                )
                for _ in range(4)
            ]
            for worker in workers:
                assert worker.next() == "ready"
            go.write_text("go")
            results = sorted(worker.next().split() for worker in workers)
            finish(procs)
            assert [r[0] for r in results] == ["lost", "lost", "lost", "won"]
            assert int(results[-1][1]) > held.fence
            # and the parent works again too
            again = manager.try_acquire("other")
            assert again is not None
            again.release()
        finally:
            app.stop()
