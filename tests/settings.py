"""Settings of the test suite.

Each test run has its own ``MC_TEST_RUN_ID`` (inherited by the processes a test
spawns), which names its SQLite file, its PostgreSQL test database and the prefix
of every Redis key it writes, so concurrent runs on one machine never meet.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

RUN_ID = os.environ.setdefault("MC_TEST_RUN_ID", f"{os.getpid()}{secrets.token_hex(3)}")
CHILD = os.environ.get("MC_TEST_CHILD") == "1"
RUN_DIR = Path(tempfile.gettempdir()) / f"mc-test-{RUN_ID}"
RUN_DIR.mkdir(parents=True, exist_ok=True)

REDIS_HOST = os.environ.get("MC_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("MC_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("MC_REDIS_DB", "0"))
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
NATS_URL = os.environ.get("MC_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("MC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
PG_HOST = os.environ.get("MC_PG_HOST", "127.0.0.1")
KEY_PREFIX = f"mctest{RUN_ID}"

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "mega_cluster",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "plugins.site_notice",
    "plugins.auth_policy",
    "plugins.data_source",
    "plugins.async_tasks",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [
            Path(__file__).resolve().parent.parent / "example_project" / "templates"
        ],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

SQLITE_PATH = str(RUN_DIR / "default.sqlite3")
PG_TEST_NAME = f"test_mc_{RUN_ID}"
DATABASES = {
    # A file, not :memory:, so processes spawned by a test share it.
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SQLITE_PATH if CHILD else str(RUN_DIR / "unused.sqlite3"),
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        "TEST": {"NAME": SQLITE_PATH},
    },
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": PG_TEST_NAME if CHILD else "test",
        "HOST": PG_HOST,
        "USER": os.environ.get("MC_PG_USER", "postgres"),
        "TEST": {"NAME": PG_TEST_NAME, "DEPENDENCIES": []},
    },
}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": KEY_PREFIX,
    },
    "django_redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": KEY_PREFIX,
    },
}

# The suite's own app name carries the run id, so wire names never collide.
MEGA_CLUSTER = {"APP_NAME": f"t{RUN_ID}"[:50]}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"mega_cluster": {"handlers": ["console"], "level": "WARNING"}},
}
