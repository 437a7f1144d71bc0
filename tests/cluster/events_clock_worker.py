"""Child process of tests/cluster/test_events_clock_skew.py (run under libfaketime).

Usage: ``python tests/cluster/events_clock_worker.py MODE APP_NAME [ARGS...]``; the
event queue is the ``database`` backend on the ``postgres`` alias. Every line
printed is flushed at once; after its line the child sleeps until it is killed
(it never renews, completes or releases what it claimed).

``claim CHANNEL LEASE``      claim up to 10 events: "claimed ID ..." or "none"
``claim_one EVENT_ID LEASE`` the Celery backend's store takes one event (what a
                             redelivered message does): "claimed ID" or
                             "busy SECONDS" (live elsewhere) or "none"
``publish CHANNEL DELAY``    publish one event: "published ID"
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from mega_cluster.events.backends.celery.store import CeleryStore  # noqa: E402
from mega_cluster.events.backends.database_sql import Clock  # noqa: E402
from mega_cluster.testing import make_app  # noqa: E402

QUEUE = {"BACKEND": "database", "OPTIONS": {"DATABASE": "postgres"}}


def say(*parts: object) -> None:
    print(*parts, flush=True)


def main() -> int:
    mode, app_name, *args = sys.argv[1:]
    app = make_app(app_name, {"EVENT_QUEUE": QUEUE})
    backend = app.event_queue.backend
    assert isinstance(backend.clock, Clock) and backend.clock.server
    if mode == "claim":
        claimed = backend.claim(args[0], 10, lease=float(args[1]))
        say("claimed", *[e.id for e in claimed]) if claimed else say("none")
    elif mode == "claim_one":
        store = CeleryStore(app, {"DATABASE": "postgres"})
        got = store.claim_one(args[0], lease=float(args[1]))
        if got is None:
            say("none")
        elif isinstance(got, float):
            say("busy", got)
        else:
            say("claimed", got.id)
    elif mode == "publish":
        say("published", app.event_queue.publish(args[0], 1, delay=float(args[1])))
    else:
        say("unknown mode", mode)
        return 2
    # Sleep until killed; not time.sleep(), which fails (EINVAL) under
    # libfaketime: select's relative timeout is left alone.
    end = time.monotonic() + 600
    while time.monotonic() < end:
        select.select([], [], [], 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
