"""Child process of the multi-process lock tests (spawned by tests/cluster/test_locks*).

Usage: ``python tests/cluster/locks_worker.py MODE APP_NAME LOCKS_JSON [ARGS...]``

Modes (every line printed is flushed at once, the parent reads them):

``count N FILE``   N x run_exclusive("counter") around a read-modify-write of FILE
``race GO_FILE``   print "ready", wait for GO_FILE, try_acquire("race"):
                   print "won FENCE" (then hold 1 s) or "lost"
``hold KEY TTL``   acquire KEY with TTL (no renewal), print "held FENCE T", sleep
``wait KEY WAIT``  print "waiting", acquire KEY, print "got FENCE T", release
``try KEY``        try_acquire KEY once: print "got FENCE" or "busy"
``keep KEY TTL SLEEP``  acquire KEY with TTL (no renewal), print "held FENCE",
                   sleep SLEEP s, then extend it: print "extended True|False",
                   then sleep until killed (never released)
``failover STOP FILE``  until STOP exists: lock("counter", ttl=2) (run_exclusive as
                   a block, which shows the fence) around
                   a read-modify-write of FILE, printing "inc VALUE FENCE T" in the
                   block after the write; a failed call prints "error NAME T" and
                   is tried again 50 ms later (what an application would do)
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from mega_cluster.testing import make_app  # noqa: E402


def say(*parts: object) -> None:
    print(*parts, flush=True)


def pause(seconds: float) -> None:
    """Sleep; not time.sleep(), which fails (EINVAL) under libfaketime (the
    skewed-clock test): select's relative timeout is left alone."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        select.select([], [], [], 0.05)


def failover(manager, stop: Path, path: Path) -> None:  # type: ignore[no-untyped-def]
    def increment(lock) -> None:  # type: ignore[no-untyped-def]
        value = int(path.read_text() or "0") + 1
        path.write_text(str(value))
        say("inc", value, lock.fence, time.time())

    while not stop.exists():
        try:
            with manager.lock("counter", ttl=2, wait=30) as lock:
                increment(lock)
        except Exception as exc:  # the failover: try again, as an application would
            say("error", type(exc).__name__, time.time())
            time.sleep(0.05)
    say("done")


def main() -> int:
    mode, app_name, locks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    args = sys.argv[4:]
    app = make_app(app_name, {"LOCKS": locks})
    manager = app.lock_manager
    try:
        if mode == "count":
            n, path = int(args[0]), Path(args[1])

            def increment() -> None:
                value = int(path.read_text() or "0")
                time.sleep(0)  # let another process run between read and write
                path.write_text(str(value + 1))

            for _ in range(n):
                manager.run_exclusive("counter", increment, ttl=10, wait=60)
            say("done")
        elif mode == "race":
            go = Path(args[0])
            say("ready")
            deadline = time.monotonic() + 60
            while not go.exists():
                if time.monotonic() > deadline:
                    say("no go")
                    return 2
                time.sleep(0.001)
            lock = manager.try_acquire("race", ttl=30)
            if lock is None:
                say("lost")
            else:
                say("won", lock.fence)
                time.sleep(1.0)
                lock.release()
        elif mode == "hold":
            lock = manager.acquire(args[0], ttl=float(args[1]), wait=10)
            say("held", lock.fence, time.time())
            pause(120)  # until the parent kills us
        elif mode == "wait":
            say("waiting")
            lock = manager.acquire(args[0], ttl=10, wait=float(args[1]))
            say("got", lock.fence, time.time())
            lock.release()
        elif mode == "try":
            lock = manager.try_acquire(args[0], ttl=10)
            say("busy" if lock is None else f"got {lock.fence}")
        elif mode == "keep":
            lock = manager.acquire(args[0], ttl=float(args[1]), wait=10)
            say("held", lock.fence)
            pause(float(args[2]))
            say("extended", lock.extend(10))
            pause(120)  # never released: until the parent kills us
        elif mode == "failover":
            failover(manager, Path(args[0]), Path(args[1]))
        else:
            say("unknown mode", mode)
            return 2
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
