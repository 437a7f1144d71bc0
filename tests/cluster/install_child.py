"""A node that boots at an agreed instant: ``django.setup()`` then ``app.start()``."""

import os
import time

import django

django.setup()

from mega_cluster import get_app  # noqa: E402

start_at = float(os.environ["MC_START_AT"])
time.sleep(max(0.0, start_at - time.time()))
app = get_app().start()
print("started", app.node_id, flush=True)
app.stop()
