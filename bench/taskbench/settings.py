"""Settings of the tasks benchmark, one set per system, from the environment.

``MC_BENCH_SYSTEM`` names the system (``all``: every app, to migrate the template
database once), ``MC_BENCH_DB`` the PostgreSQL database, ``MC_BENCH_TAG`` the
cluster app name and Redis key prefix, ``MC_BENCH_CONCURRENCY`` a worker concurrency
that only settings can give (dj-queue's threads; ``default``: the system's own).
"""

from __future__ import annotations

import os

SYSTEM = os.environ.get("MC_BENCH_SYSTEM", "all")
TAG = os.environ.get("MC_BENCH_TAG", "mcbencht")
REDIS_URL = os.environ.get("MC_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = os.environ.get("MC_BENCH_CONCURRENCY", "default")

SECRET_KEY = "bench"  # a throw-away benchmark project
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING_CONFIG = None
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("MC_BENCH_DB", "postgres"),
        "HOST": os.environ.get("MC_PG_HOST", "127.0.0.1"),
        "USER": os.environ.get("MC_PG_USER", "postgres"),
        # Persistent connections for every system, as in production (Django's
        # default, 0, reconnects for every task in a worker that closes old ones).
        "CONN_MAX_AGE": None,
    }
}

PEER_APPS = {
    "tasks-db": "django_tasks_db",
    "ox": "django_ox",
    "dj-queue": "dj_queue",
}
PEER_BACKENDS = {
    "tasks-db": "django_tasks_db.DatabaseBackend",
    "ox": "django_ox.backend.OxBackend",
    "dj-queue": "dj_queue.backend.DjQueueBackend",
}

INSTALLED_APPS = ["django.contrib.contenttypes"]
if SYSTEM == "all":
    for app in PEER_APPS.values():
        try:
            __import__(app)
        except ImportError:  # not installed: bench/tasks.py says so
            continue
        INSTALLED_APPS.append(app)
    INSTALLED_APPS.append("mega_cluster")
elif SYSTEM in PEER_APPS:
    INSTALLED_APPS.append(PEER_APPS[SYSTEM])
else:
    INSTALLED_APPS.append("mega_cluster")

options: dict = {}
if SYSTEM == "dj-queue" and CONCURRENCY != "default":
    # dj-queue's worker threads come from OPTIONS only (default: 3 threads).
    options = {"workers": [{"threads": int(CONCURRENCY)}]}
if SYSTEM.startswith("ours"):
    TASKS = {
        "default": {
            "BACKEND": "mega_cluster.tasks.ClusterTaskBackend",
            "QUEUES": ["default"],
        }
    }
    section: dict = {
        "BACKEND": "database",
        # The enqueuing process is a web node: it does not consume tasks.
        "CONSUME": os.environ.get("MC_BENCH_ROLE") == "worker",
    }
    if SYSTEM == "ours-celery":
        section["BACKEND"] = "celery"
        section["OPTIONS"] = {
            "BROKER_URL": REDIS_URL,
            "TRANSPORT_OPTIONS": {"global_keyprefix": f"{TAG}:"},
        }
    MEGA_CLUSTER = {"APP_NAME": TAG, "EVENT_QUEUE": section}
elif SYSTEM in PEER_BACKENDS:
    TASKS = {"default": {"BACKEND": PEER_BACKENDS[SYSTEM], "OPTIONS": options}}
else:
    MEGA_CLUSTER = {"APP_NAME": TAG}
