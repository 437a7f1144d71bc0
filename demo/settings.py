"""The example project as a cluster node: Redis pub/sub and locks, the database
event queue, one SQLite file shared by the nodes of this machine.

Set by ``python -m demo`` (and the plugin cluster tests) through the environment:
``DEMO_DB`` (SQLite file), ``DEMO_REDIS_URL``, ``DEMO_APP_NAME`` and optionally
``DEMO_KEY_PREFIX``. Web nodes do not consume the event queue; ``runworker`` does.
"""

import os

from example_project.settings import *  # noqa: F403

DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", "demo.sqlite3"),
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
_redis = os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379/0")
_lock_options = {"URL": _redis}
if os.environ.get("DEMO_KEY_PREFIX"):
    _lock_options["KEY_PREFIX"] = os.environ["DEMO_KEY_PREFIX"]
MEGA_CLUSTER = {
    "APP_NAME": os.environ.get("DEMO_APP_NAME", "demo"),
    "NODE_HEARTBEAT": 1.0,
    "NODE_TIMEOUT": 10.0,
    "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": _redis}},
    "LOCKS": {"BACKEND": "redis", "OPTIONS": _lock_options},
    "EVENT_QUEUE": {
        "BACKEND": "database",
        "POLL_INTERVAL": 0.2,
        "RETRY_BASE": 0.2,
        "RETRY_CAP": 1.0,
        "CONSUME": False,
    },
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"mega_cluster": {"handlers": ["console"], "level": "WARNING"}},
}
