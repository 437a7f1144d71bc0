"""Node 2 of the near-cache test: answers commands read from stdin, one a line.

``get KEY`` prints the JSON of ``cache.get(KEY)`` (``"<miss>"`` on a miss);
``watch KEY EXPECTED`` prints ``watching``, then polls ``get`` until it returns the
JSON value EXPECTED and prints the wall-clock time (``time.time()``) it saw it, or
``timeout`` after 5 s; ``quit`` stops. Environment: ``MC_APP_NAME``.
"""

import json
import os
import sys
import time

import django

django.setup()

from django.conf import settings  # noqa: E402

from mega_cluster.testing import make_app  # noqa: E402

MISS = "<miss>"
app = make_app(
    os.environ["MC_APP_NAME"],
    {
        "CACHE": {"DEFAULT_STORE": "django_redis"},
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
    },
)
cache = app.cache_manager.create_cache("near", near_cache=True)
cache.get("warm-up")  # connects and subscribes before the parent starts
print("ready", flush=True)

for line in sys.stdin:
    command, *args = line.split(maxsplit=2)
    if command == "get":
        print(json.dumps(cache.get(args[0], MISS)), flush=True)
    elif command == "watch":
        key, expected = args[0], json.loads(args[1])
        print("watching", flush=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if cache.get(key, MISS) == expected:
                print(repr(time.time()), flush=True)
                break
            time.sleep(0.001)
        else:
            print("timeout", flush=True)
    elif command == "quit":
        break
app.stop()
