"""One node of the wrap stampede: waits for the go signal, then wraps a cold key.

Environment: ``MC_APP_NAME``, ``MC_CACHE_STORE`` (a CACHES alias), ``MC_TAG`` (Redis
key prefix of this test's counters). Prints the value ``wrap`` returned, as JSON.
"""

import json
import os
import sys
import time

import django

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402

from mega_cluster.testing import make_app  # noqa: E402

tag = os.environ["MC_TAG"]
client = redis.Redis.from_url(settings.REDIS_URL)
app = make_app(
    os.environ["MC_APP_NAME"],
    {
        "CACHE": {"DEFAULT_STORE": os.environ["MC_CACHE_STORE"]},
        "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
    },
)
cache = app.cache_manager.create_cache("stampede")
# Connect before the race, so the race is about wrap and not about connecting.
cache.get("warm-up")
app.lock_manager.acquire(f"warm-up:{app.node_id}", wait=5).release()


def compute() -> dict:
    client.incr(f"{tag}:calls")
    time.sleep(0.5)
    return {"computed_by": app.node_id}


client.incr(f"{tag}:ready")
deadline = time.monotonic() + 90
while not client.exists(f"{tag}:go"):
    if time.monotonic() > deadline:
        sys.exit("no go signal within 90 s")
    time.sleep(0.002)
value = cache.wrap("cold", compute)
print(json.dumps(value), flush=True)
app.stop()
