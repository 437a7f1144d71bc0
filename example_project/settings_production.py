"""Production-like settings: every primitive on a shared backend, DEBUG off.

CI runs ``manage.py check --deploy --fail-level WARNING`` against this file, so a
cluster-unsafe default or a Django deployment warning fails the build.
"""

from __future__ import annotations

import os

from .settings import *  # noqa: F403

DEBUG = False
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "ci-only-3f9c2b7e1d8a4c6f9e0b5a7d2c8f1e4b6a9d0c3e7f2b5a8d1c4e7f0a3b6c9d2e",
)
ALLOWED_HOSTS = ["app.example.com"]
SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "test"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "USER": os.environ.get("PGUSER", "postgres"),
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
    }
}

MEGA_CLUSTER = {
    "APP_NAME": "main",
    "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
    "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
    "EVENT_QUEUE": {"BACKEND": "database"},
    "CACHE": {"DEFAULT_STORE": "default"},
}
