"""One pub/sub node of a multi-process test (argv: mode backend url app index dir).

``load``: subscribe, say ready, wait for ``go``, publish MC_COUNT messages, wait
until the other nodes' messages arrived, write what was received.
``listen``: subscribe with on_gap, say ready, record messages until a gap was
reported and an ``after`` message arrived, write what was received.
Every wait is bounded; the result is ``<dir>/result-<index>.json``.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

import django

django.setup()

from mega_cluster.testing import make_app  # noqa: E402

mode, backend, url, app_name, index, workdir = sys.argv[1:7]
workdir = Path(workdir)
count = int(os.environ.get("MC_COUNT", "500"))
expected = int(os.environ.get("MC_EXPECTED", "0"))

app = make_app(
    app_name,
    {
        "PUBSUB": {
            "BACKEND": backend,
            "OPTIONS": {"URL": url},
            "RECONNECT_MAX_DELAY": 0.5,
        }
    },
)
received = []
gaps = []
done = threading.Event()


def handler(message):
    received.append(message)
    if mode == "load" and len(received) >= expected:
        done.set()
    if mode == "listen" and gaps and message.get("phase") == "after":
        done.set()


app.pubsub_manager.subscribe("load", handler, on_gap=lambda: gaps.append(time.time()))
(workdir / f"ready-{index}").write_text(app.node_id)

if mode == "load":
    deadline = time.monotonic() + 30
    while not (workdir / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal within 30 s")
        time.sleep(0.01)
    for i in range(count):
        app.pubsub_manager.publish("load", {"from": index, "i": i})

done.wait(60)
time.sleep(0.5)  # anything extra (own messages, duplicates) would arrive by now
result = {"node": app.node_id, "received": received, "gaps": len(gaps)}
(workdir / f"result-{index}.json").write_text(json.dumps(result))
app.stop()
print("done", len(received), flush=True)
