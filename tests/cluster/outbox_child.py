"""One node of the outbox tests (argv: mode redis_url app_name workdir [args]).

``receive NAME``: subscribe sync channel ``c`` (a named receiver with
``MC_RECEIVER``), start, write ``ready-NAME``; append every message's ``i`` to
``recv-NAME.log`` and every gap to ``gaps-NAME.log`` (one line each, flushed);
stop cleanly when ``stop-NAME`` appears (bounded by MC_LIFETIME seconds).

With ``MC_INBOX_TABLE`` a second, idempotent handler adds 1 to the message's row
of that table. ``MC_HIGH_WATER_EVERY``: seconds between a named receiver's polls
(and position saves).

``send FIRST LAST``: publish ``{"i": i}`` for i in FIRST..LAST, each in its own
transaction, after a rolled-back transaction that publishes ``{"i": -i}`` for
every fifth i (after ``go`` appears when ``MC_WAIT_GO`` is set). ``MC_KILL_AT`` (comma-separated i values): ``kill -9`` itself
between that commit and its send (the test-build hook).
"""

import os
import signal
import sys
import time
from pathlib import Path

import django

django.setup()

from django.db import transaction  # noqa: E402

from mega_cluster.sync_messages import manager as sync_manager  # noqa: E402
from mega_cluster.testing import make_app  # noqa: E402

mode, url, app_name, workdir = sys.argv[1:5]
workdir = Path(workdir)
outbox = {
    "RELAY_AFTER": 1.0,
    "RELAY_INTERVAL": 0.2,
    "HIGH_WATER_EVERY": float(os.environ.get("MC_HIGH_WATER_EVERY", "0.5")),
}
if os.environ.get("MC_RECEIVER"):
    outbox["RECEIVER"] = os.environ["MC_RECEIVER"]
app = make_app(
    app_name,
    {
        "PUBSUB": {
            "BACKEND": "redis",
            "OPTIONS": {"URL": url},
            "RECONNECT_MAX_DELAY": 0.5,
        },
        "OUTBOX": outbox,
    },
)

if mode == "receive":
    name = sys.argv[5]
    log = (workdir / f"recv-{name}.log").open("a", buffering=1)
    gaps = (workdir / f"gaps-{name}.log").open("a", buffering=1)
    app.sync_message_manager.subscribe(
        "c", lambda m: log.write(f"{m['i']}\n"), on_gap=lambda: gaps.write("gap\n")
    )
    if os.environ.get("MC_INBOX_TABLE"):  # tests/cluster/test_inbox_sync.py
        from django.db import connection

        table = os.environ["MC_INBOX_TABLE"]

        def count(message):  # an effect a second run would repeat
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET n = n + 1 WHERE k = %s", [message["i"]]
                )

        app.sync_message_manager.subscribe("c", count, idempotent="counter")
    app.start()
    (workdir / f"ready-{name}").write_text(app.node_id)
    deadline = time.monotonic() + float(os.environ.get("MC_LIFETIME", "120"))
    while not (workdir / f"stop-{name}").exists():
        if time.monotonic() > deadline:
            sys.exit("no stop signal in time")
        time.sleep(0.05)
    app.stop()
    print("stopped", flush=True)
elif mode == "send":
    first, last = int(sys.argv[5]), int(sys.argv[6])
    kill_at = {int(x) for x in os.environ.get("MC_KILL_AT", "").split(",") if x}
    current = [0]

    def die_after_commit():
        if current[0] in kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    sync_manager.AFTER_COMMIT_HOOK = die_after_commit
    app.sync_message_manager  # noqa: B018 - built (and connected) by start()
    app.start()
    if os.environ.get("MC_WAIT_GO"):
        (workdir / "ready-sender").write_text(app.node_id)
        deadline = time.monotonic() + 60
        while not (workdir / "go").exists():
            if time.monotonic() > deadline:
                sys.exit("no go signal in time")
            time.sleep(0.02)
    for i in range(first, last + 1):
        current[0] = i
        if i % 5 == 0:
            try:
                with transaction.atomic():
                    app.sync_message_manager.publish("c", {"i": -i})
                    raise RuntimeError("rolled back")
            except RuntimeError:
                pass
        with transaction.atomic():
            app.sync_message_manager.publish("c", {"i": i})
    app.stop()
    print("sent", last, flush=True)
