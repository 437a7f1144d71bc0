"""Database leases are decided by the database server's clock: a node whose clock
is 30 s ahead cannot take a live lease early, one 30 s behind cannot keep a lapsed
one. The skewed node is a real process under libfaketime (its every clock read,
Python's and the C library's, is shifted; the monotonic clock is not)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from mega_cluster.testing import make_app
from tests.cluster.test_locks import Lines
from tests.databases import ON_POSTGRES

pytestmark = [pytest.mark.cluster, *ON_POSTGRES]

FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
LOCKS = {"BACKEND": "database", "OPTIONS": {"DATABASE": "postgres"}}


@pytest.fixture(scope="module")
def faketime() -> str:
    if not os.path.exists(FAKETIME) and shutil.which("apt-get"):
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "libfaketime"],
        ):
            subprocess.run(argv, check=False, capture_output=True, timeout=300)
    if not os.path.exists(FAKETIME):
        pytest.fail(f"{FAKETIME} is missing: apt-get install libfaketime")
    return FAKETIME


def _skewed(procs, faketime: str, offset: str, *args: str) -> Lines:
    env = {
        "LD_PRELOAD": faketime,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    argv = ["tests/cluster/locks_worker.py", args[0], args[1], json.dumps(LOCKS)]
    return Lines(procs.spawn([*argv, *args[2:]], env=env))


def test_a_clock_30_s_ahead_does_not_take_a_live_lease(procs, unique_name, faketime):
    app = make_app(unique_name, {"LOCKS": LOCKS})
    try:
        held = app.lock_manager.acquire("k", ttl=20)  # live for 20 s by any clock
        child = _skewed(procs, faketime, "+30s", "try", unique_name, "k")
        assert child.next(timeout=60) == "busy"
        assert not held.lost
        held.release()
        again = _skewed(procs, faketime, "+30s", "try", unique_name, "k")
        assert again.next(timeout=60).startswith("got ")  # free: it can have it
    finally:
        app.stop()


def test_the_live_lease_of_a_clock_30_s_behind_is_not_taken_early(
    procs, unique_name, faketime
):
    """Its lease end must not be written in its own (early) time either."""
    app = make_app(unique_name, {"LOCKS": LOCKS})
    try:
        child = _skewed(procs, faketime, "-30s", "hold", unique_name, "k", "20")
        assert child.next(timeout=60).startswith("held ")
        assert app.lock_manager.try_acquire("k", ttl=5) is None
    finally:
        app.stop()


def test_the_lapsed_lease_of_a_clock_30_s_ahead_is_not_kept(
    procs, unique_name, faketime
):
    """A 1 s lease of a node 30 s ahead ends 1 s later by the database's clock
    (written in its own time it would stay live 31 s), and its late extension
    fails."""
    app = make_app(unique_name, {"LOCKS": LOCKS})
    try:
        child = _skewed(procs, faketime, "+30s", "keep", unique_name, "k", "1", "3")
        fence = int(child.next(timeout=60).split()[1])
        deadline = time.monotonic() + 10
        lock = None
        while lock is None and time.monotonic() < deadline:
            lock = app.lock_manager.try_acquire("k", ttl=20)
            time.sleep(0.1)
        assert lock is not None, "the lapsed lease was still live 10 s later"
        assert lock.fence > fence
        assert child.next(timeout=60) == "extended False"
        lock.release()
    finally:
        app.stop()
