"""Child: hold a lock (renewed by the watchdog) until it is lost or 120 s pass."""

import os
import sys
import time

import django

sys.path.insert(0, os.getcwd())
django.setup()

from mega_cluster import get_app  # noqa: E402

app = get_app()
lock = app.lock_manager.acquire(sys.argv[1], ttl=6, auto_extend=True)
print("held", app.node_id, lock.fence, flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline and not lock.lost:
    time.sleep(0.1)
print("lost" if lock.lost else "timeout", flush=True)
