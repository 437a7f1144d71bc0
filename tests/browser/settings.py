"""Settings of the example project for the browser test: Redis backends, the run's
test database, a plugin consuming "emails" (on runworker nodes only)."""

import os

from example_project.settings import *  # noqa: F403
from example_project.settings import INSTALLED_APPS
from tests.settings import KEY_PREFIX, REDIS_URL, SQLITE_PATH

DEBUG = True  # runserver serves the admin's static files
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [*INSTALLED_APPS, "tests.browser.demo"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SQLITE_PATH,
        "OPTIONS": {"timeout": 30},
    }
}
LOGGING = {"version": 1, "disable_existing_loggers": False}


def cluster_value(name: str) -> dict:
    return {
        "APP_NAME": name,
        "NODE_HEARTBEAT": 0.5,
        "NODE_TIMEOUT": 5.0,
        "LOCKS": {
            "BACKEND": "redis",
            "OPTIONS": {"URL": REDIS_URL, "KEY_PREFIX": KEY_PREFIX},
        },
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
        # Web nodes do not consume; runworker switches consuming on.
        "EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.2, "CONSUME": False},
    }


MEGA_CLUSTER = cluster_value(os.environ.get("MC_APP_NAME", "unused"))
